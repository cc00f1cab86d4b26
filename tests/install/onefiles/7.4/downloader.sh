#!/bin/bash

# Stand-in for OpenNebula 7.4's datastore downloader.sh (URL to a file, or
# to stdout for -) in onevita's tests. Kept from the real one: its variables,
# its `case "$FROM" in` arms in their order, and how $command then runs (type
# sniffed unless the arm set file_type, digest on the side, decompressor).
# The helpers are short ones of our own; remote schemes' arms are stubs.

# a self-contained install under $ONE_LOCATION, else the package paths
if [ -n "$ONE_LOCATION" ]; then
    LIB_LOCATION="$ONE_LOCATION/lib" VAR_LOCATION="$ONE_LOCATION/var"
else
    LIB_LOCATION=/usr/lib/one VAR_LOCATION=/var/lib/one
fi
. "$LIB_LOCATION/sh/scripts_common.sh"

DRIVER_PATH=$(dirname $0)
HELPERS="$VAR_LOCATION/remotes/datastore"

die() { echo "$1" >&2; exit -1; }

# $1 made safe to put between single quotes
esc_sq() { local q="'\\''"; echo "${1//\'/$q}"; }

# MIME type of what the command $1 prints, told by its first bytes
get_type() {
    [ "$NO_DECOMPRESS" = yes ] && { echo application/octet-stream; return; }
    local magic
    magic=$( (eval "$1" | head -c 512 | od -An -v -tx1 | tr -d ' \n') 2>/dev/null)
    case "$magic" in
    1f8b*)         echo application/gzip ;;
    425a68*)       echo application/x-bzip2 ;;
    fd377a585a00*) echo application/x-xz ;;
    504b0304*)     echo application/zip ;;
    *)  # tar writes "ustar" at byte 257
        [ "${magic:514:10}" = 7573746172 ] && echo application/x-tar || echo application/octet-stream ;;
    esac
}

# the filter turning a stream of MIME type $1 back into plain bytes
get_decompressor() {
    case "$1" in
    application/gzip|application/x-gzip) echo "gzip -dc" ;;
    application/x-bzip2|application/x-xz) echo "${1#application/x-} -dc" ;;
    *) echo cat ;;
    esac
}

# stdin through the filter $1 into the file $2, or to stdout when $2 is -
decompress() { if [ "$2" = - ]; then $1; else $1 > "$2"; fi; }

# digest of stdin by algorithm $1 (md5, sha1) into $HASH_FILE; with none,
# still read it all so that tee never meets a closed pipe
hasher() {
    [ -z "$1" ] && { cat > /dev/null; return; }
    "${1}sum" | cut -d ' ' -f 1 > "$HASH_FILE.part" && mv "$HASH_FILE.part" "$HASH_FILE"
}

# a tar or zip written to the file $1 becomes a directory of that name
unarchive() {
    local tmp="$1.tmp" unpack
    case "$(get_type "cat '$(esc_sq "$1")'")" in
    application/x-tar) unpack=(tar -xf "$tmp" -C "$1") ;;
    application/zip) unpack=(unzip -q -d "$1" "$tmp") ;;
    *) return 0 ;;
    esac
    mv "$1" "$tmp" && mkdir "$1" && "${unpack[@]}" && rm "$tmp" || die "Cannot unpack $1"
}

# (the S3 helpers, credentials and request signing, are left out)

# rbd://[user@]host/pool/image: the image exported on that host over ssh
get_rbd_cmd() {
    local where=${1#rbd://}
    where=${where%%\?*}
    echo "ssh '$(esc_sq "${where%%/*}")' \"rbd export '$(esc_sq "${where#*/}")' -\""
}

# True when version $1 <= version $2 (sort -V)
version_le() { [ "$(printf '%s\n' "$1" "$2" | sort -V | head -n 1)" = "$1" ]; }

# curl's retry options; --retry-all-errors needs curl 7.71,
# and is left out of partial downloads
curl_retry_args() {
    [ "$NO_RETRY" = yes ] && return
    local version
    version=$(curl --version 2>/dev/null | awk 'NR == 1 {print $2}')
    echo -n "--retry 3 --retry-delay 3"
    version_le 7.71.0 "${version:-0}" && [ -z "$MAX_SIZE" ] && echo -n " --retry-all-errors"
    echo
}

# runs $HELPERS/<scheme>_downloader.rb, which prints command= and
# clean_command= lines, and takes those over (or stops when it fails)
helper_defs() {
    local defs
    defs=$("$HELPERS/$1_downloader.rb" "${@:2}" | grep -E '^(clean_)?command=') || exit -1
    eval "$defs"
}

# options come before FROM and TO
while [ $# -gt 0 ]; do
    case "$1" in
    -m|--md5)      HASH_TYPE=md5 HASH=$2; shift ;;
    -s|--sha1)     HASH_TYPE=sha1 HASH=$2; shift ;;
    -l|--limit)    export LIMIT_RATE=$2; shift ;;
    -c|--max-size) export MAX_SIZE=$2; shift ;;
    -n|--nodecomp) export NO_DECOMPRESS=yes ;;
    -o|--noretry)  export NO_RETRY=yes ;;
    --)            shift; break ;;
    -?*)           die "Unknown option $1" ;;
    *)             break ;;
    esac
    shift
done

FROM="$1"
TO="$2"

[ -n "$HASH_TYPE" ] && [ -n "$MAX_SIZE" ] && die "No hash check on a partial download"
export HASH_FILE="/tmp/downloader.hash.$$"

GLOBAL_CURL_ARGS="--fail --silent --show-error --insecure --location $(curl_retry_args)"
INTERACTIVE=false

case "$FROM" in
http://*|https://*)
    # quiet unless it fails, no certificate check, follows redirects
    curl_args="$GLOBAL_CURL_ARGS${LIMIT_RATE:+ --limit-rate $LIMIT_RATE} '$(esc_sq "$FROM")'"
    command="curl $curl_args"
    ;;
ssh://*)
    # ssh://[user@]host:path
    where=${FROM#ssh://}
    command="ssh '$(esc_sq "${where%%:*}")' \"cat '$(esc_sq "${where#*:}")'\""
    ;;
s3://*)
    die "s3:// needs request signing, which this copy leaves out"
    ;;
rbd://*)
    command="$(get_rbd_cmd "$FROM")"
    ;;
lxd://*)
    file_type="application/octet-stream"
    command="$HELPERS/lxd_downloader.sh '$(esc_sq "$FROM")'"
    ;;
restic://*|restic+rbd://*)
    helper_defs restic "$FROM"
    ;;
rsync://*|rsync+rbd://*)
    helper_defs rsync "$FROM"
    ;;
netapp://*)
    # netapp:///vol/<volume>/<lun>
    helper_defs netapp "$FROM"
    ;;
purefa://*)
    # purefa:///<volume name>
    helper_defs purefa "$FROM"
    ;;
onebex://*)
    # onebex://<datastore id>:<port>; its helper writes $TO itself
    file_type="application/octet-stream"
    INTERACTIVE=true
    helper_defs onebex "$FROM" "$TO"
    ;;
*)
    [ -r "$FROM" ] || die "Cannot read from $FROM"
    command="cat -- '$(esc_sq "$FROM")'"
    ;;
esac

if [ "$INTERACTIVE" = true ]; then
    # the helper writes $TO itself: nothing to sniff, hash or unpack
    [ -n "$HASH_TYPE" ] && die "No hash check on an interactive download"
    eval "$command"
    ret=$?
    # 143: the helper was stopped by SIGTERM, its normal end
    [ "$ret" = 0 ] || [ "$ret" = 143 ] || die "Error copying"
else
    # the type is sniffed unless the arm knew it (the command then runs twice)
    [ -z "$file_type" ] && file_type=$(get_type "$command")
    decompressor=$(get_decompressor "$file_type")

    if [ -z "$MAX_SIZE" ]; then
        # source, digest on the side, decompressor, then $TO
        eval "$command" | \
            tee >( hasher $HASH_TYPE) | \
            decompress "$decompressor" "$TO"
        status=("${PIPESTATUS[@]}")
        [ "${status[0]}" = 0 ] && [ "${status[2]}" = 0 ] || die "Error copying"
    else
        # head last: the decompressor may need more input than it gives out;
        # a source killed by SIGPIPE (141) once head has enough is not an error
        eval "$command" | \
            decompress "$decompressor" "$TO" 2>/dev/null | \
            head -c "${MAX_SIZE}"
        status=("${PIPESTATUS[@]}")
        if [ "${status[2]}" != 0 ] || ! [[ ${status[1]} =~ ^(0|141)$ ]] ||
           { [ "${status[0]}" != 0 ] && [ "${status[1]}" = 0 ]; }; then
            die "Error copying"
        fi
    fi

    if [ -n "$HASH_TYPE" ]; then
        # the hasher runs beside tee and may still be writing
        for _ in {1..50}; do [ -e "$HASH_FILE" ] && break; sleep 0.1; done
        sum=$(cat "$HASH_FILE" 2>/dev/null); rm -f "$HASH_FILE"
        [ "$sum" = "$HASH" ] || die "Hash does not match"
    fi

    # only a file can hold an archive to unpack
    if [ "$TO" != "-" ]; then
        unarchive "$TO"
    fi
fi

# the arm's clean-up, if it left one
if [ -n "$clean_command" ]; then
    eval "$clean_command"
fi
