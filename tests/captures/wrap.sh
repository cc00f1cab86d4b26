#!/bin/bash
# Put a capturing wrapper at every onevita action link of an OpenNebula remotes tree, or take
# them away again (by hand, on a real front-end; see README.md beside this file).
#
#   wrap.sh wrap REMOTES CAPTURES     each link <fam>/<drv>/<act> moves to <fam>/<drv>.capture/<act>
#                                     and a wrapper in its place records argv, stdin, stderr and
#                                     exit code under CAPTURES, then runs it with the same stdin
#   wrap.sh unwrap REMOTES            the links back, the wrappers gone
set -euo pipefail
mode=$1 remotes=$2
links() { find "$remotes/tm/vitastor" "$remotes/datastore/vitastor" "$remotes/vmm/kvm" \
               -maxdepth 1 "$@" 2>/dev/null; }
case $mode in
wrap)
    captures=$3
    mkdir -p "$captures"; chmod 1777 "$captures"
    links -type l -lname '*onevita/onevita' | while read -r link; do
        dir=$(dirname "$link"); act=$(basename "$link")
        mkdir -p "$dir.capture"
        ln -sfn "../../onevita/onevita" "$dir.capture/$act"
        rm "$link"
        cat > "$link" <<WRAPPER
#!/bin/bash
# onevita capture wrapper (tests/captures/wrap.sh)
cap="$captures/\$(date +%Y%m%dT%H%M%S.%N)-$(basename "$(dirname "$dir")")-\$(basename "\$(dirname "\$0")")-\$(basename "\$0")"
printf '%s\\0' "\$@" > "\$cap.argv"
if [ -t 0 ]; then : > "\$cap.stdin"; exec 0</dev/null; fi
tee "\$cap.stdin" | "\$(dirname "\$0").capture/\$(basename "\$0")" "\$@" 2> >(tee "\$cap.stderr" >&2)
rc=\${PIPESTATUS[1]}
echo "\$rc" > "\$cap.rc"
exit "\$rc"
WRAPPER
        chmod 755 "$link"
        chown --reference="$dir" "$link" "$dir.capture" "$dir.capture/$act" 2>/dev/null || true
    done ;;
unwrap)
    links -type f | while read -r file; do
        grep -q 'onevita capture wrapper' "$file" || continue
        dir=$(dirname "$file"); act=$(basename "$file")
        rm "$file"; mv "$dir.capture/$act" "$file"
        rmdir "$dir.capture" 2>/dev/null || true
    done ;;
*) echo "usage: wrap.sh wrap REMOTES CAPTURES | unwrap REMOTES" >&2; exit 2 ;;
esac
