# Sourced by every shim. $SHIM_STATE/mode tells it to misbehave:
#   hang | garbage | fail | huge | slow (behave, 0.3 s late); absent or
#   empty: behave.
echo "$(basename "$0") $*" >> "$SHIM_STATE/calls.log"
echo "${LC_ALL:-unset} ${LANG:-unset} ${LANGUAGE:-unset}" >> "$SHIM_STATE/locale.log"
# $SHIM_STATE/down_after N: once more than N shim calls were made, the
# host's management daemon is down (hostd for vim-cmd, pmxcfs for qm/pct)
# and the tools say so the way they do.
if [ -f "$SHIM_STATE/down_after" ] && [ "$(wc -l < "$SHIM_STATE/calls.log")" -gt "$(cat "$SHIM_STATE/down_after")" ]; then
  case "$(basename "$0")" in
    vim-cmd) echo "Connect to localhost failed: Connection failure." >&2; exit 1 ;;
    qm|pct)
      echo "ipcc_send_rec[1] failed: Connection refused" >&2
      echo "ipcc_send_rec[2] failed: Connection refused" >&2
      echo "ipcc_send_rec[3] failed: Connection refused" >&2
      echo "Unable to load access control list: Connection refused" >&2
      exit 111 ;;
  esac
fi
case "$(cat "$SHIM_STATE/mode" 2>/dev/null)" in
  hang) exec sleep 20 ;;
  garbage) printf '%%%% \001\002 {{{ not what you expected ]]]\n'; exit 0 ;;
  fail) echo "shim: internal failure" >&2; exit 3 ;;
  huge) head -c 3000000 /dev/zero | tr '\0' 'x'; exit 0 ;;
  slow) sleep 0.3 ;;
esac
