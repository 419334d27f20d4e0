# Sourced by every shim. $SHIM_STATE/mode tells it to misbehave:
#   hang | garbage | fail | huge | slow (behave, 0.3 s late); absent or
#   empty: behave.
echo "$(basename "$0") $*" >> "$SHIM_STATE/calls.log"
echo "${LC_ALL:-unset} ${LANG:-unset} ${LANGUAGE:-unset}" >> "$SHIM_STATE/locale.log"
case "$(cat "$SHIM_STATE/mode" 2>/dev/null)" in
  hang) exec sleep 20 ;;
  garbage) printf '%%%% \001\002 {{{ not what you expected ]]]\n'; exit 0 ;;
  fail) echo "shim: internal failure" >&2; exit 3 ;;
  huge) head -c 3000000 /dev/zero | tr '\0' 'x'; exit 0 ;;
  slow) sleep 0.3 ;;
esac
