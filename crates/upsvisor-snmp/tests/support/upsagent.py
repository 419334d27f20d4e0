"""net-snmp pass_persist handler serving UPS values from a state file.

snmpd starts one copy per `pass_persist` line. Every request re-reads the
state file (one `OID TYPE VALUE` per line; the test rewrites it atomically),
so a test changes what the agent reports at run time. SETs to an existing
OID with the same type update the file and are appended to `sets.log` next
to it; a SET to a PowerNet outlet command also switches that outlet's state,
as a real PDU would.
"""
import os
import sys

STATE = sys.argv[1]
LOG = os.path.join(os.path.dirname(STATE), "sets.log")

RPDU_CMD = (1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3, 3, 1, 1, 4)
RPDU_STATE = (1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3, 5, 1, 1, 4)
GROUP_CMD = (1, 3, 6, 1, 4, 1, 318, 1, 1, 1, 12, 3, 2, 1, 3)
GROUP_STATE = (1, 3, 6, 1, 4, 1, 318, 1, 1, 1, 12, 1, 2, 1, 3)


def key(oid):
    return tuple(int(x) for x in oid.strip(".").split(".") if x)


def text(k):
    return "." + ".".join(str(x) for x in k)


def load():
    rows = {}
    try:
        with open(STATE) as f:
            for line in f:
                parts = line.rstrip("\n").split(" ", 2)
                if len(parts) == 3 and parts[0].startswith("."):
                    rows[key(parts[0])] = (parts[1], parts[2])
    except FileNotFoundError:
        pass
    return rows


def save(rows):
    tmp = STATE + ".agent.tmp"
    with open(tmp, "w") as f:
        for k in sorted(rows):
            f.write("%s %s %s\n" % (text(k), rows[k][0], rows[k][1]))
    os.replace(tmp, STATE)


def answer(k, row):
    sys.stdout.write("%s\n%s\n%s\n" % (text(k), row[0], row[1]))


def main():
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        cmd = line.strip()
        if not cmd:
            # snmpd ends a "set" with an empty line; it expects no answer.
            continue
        if cmd == "PING":
            sys.stdout.write("PONG\n")
        elif cmd in ("get", "getnext"):
            k = key(sys.stdin.readline())
            rows = load()
            if cmd == "get":
                if k in rows:
                    answer(k, rows[k])
                else:
                    sys.stdout.write("NONE\n")
            else:
                later = sorted(x for x in rows if x > k)
                if later:
                    answer(later[0], rows[later[0]])
                else:
                    sys.stdout.write("NONE\n")
        elif cmd == "set":
            k = key(sys.stdin.readline())
            typ, _, val = sys.stdin.readline().strip().partition(" ")
            rows = load()
            if k not in rows:
                sys.stdout.write("not-writable\n")
            elif rows[k][0] != typ:
                sys.stdout.write("wrong-type\n")
            else:
                rows[k] = (typ, val)
                for cmd_col, state_col in ((RPDU_CMD, RPDU_STATE), (GROUP_CMD, GROUP_STATE)):
                    if k[:-1] == cmd_col and val in ("1", "2"):
                        rows[state_col + k[-1:]] = ("integer", val)
                save(rows)
                with open(LOG, "a") as f:
                    f.write("%s %s\n" % (text(k), val))
                sys.stdout.write("DONE\n")
        else:
            sys.stdout.write("NONE\n")
        sys.stdout.flush()


main()
