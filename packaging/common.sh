# Shared by the Debian maintainer scripts and the rpm scriptlets: build_packages.py pastes this
# file where a template names COMMON. POSIX sh; no percent signs (rpm would expand them).
#
# DPKG_ROOT is what dpkg sets with --root and --force-script-chrootless (empty otherwise): the
# scripts then run outside the root and must prefix every path. rpm chroots into its --root
# before running scriptlets, so there it is always empty.

ONEVITA_PYZ="${DPKG_ROOT:-}/usr/lib/onevita/onevita.pyz"

# Run an admin command of the zipapp against the system under ${DPKG_ROOT:-/}.
# shiv unpacks the bundled libraries into $SHIV_ROOT (default ~/.shiv): a scratch directory
# keeps root's home from collecting one copy per upgrade.
onevita() {
    onevita_shiv=$(mktemp -d)
    onevita_status=0
    SHIV_ROOT="$onevita_shiv" python3 -I -S "$ONEVITA_PYZ" "$@" --root "${DPKG_ROOT:-/}" || onevita_status=$?
    rm -rf "$onevita_shiv"
    return "$onevita_status"
}

# Is an OpenNebula front-end installed here? oned.conf alone is not enough: it is a conffile,
# so it stays when the opennebula package is removed (not purged), while the remotes go.
opennebula_present() {
    [ -f "${DPKG_ROOT:-}/etc/one/oned.conf" ] &&
        [ -f "${DPKG_ROOT:-}/var/lib/one/remotes/datastore/downloader.sh" ]
}

# Install into OpenNebula if it is there, or say how to do it later.
install_or_note() {
    if opennebula_present; then
        onevita install
    else
        echo "opennebula-vitastor: no OpenNebula front-end here (${DPKG_ROOT:-}/etc/one/oned.conf and"
        echo "opennebula-vitastor: ${DPKG_ROOT:-}/var/lib/one/remotes/datastore/downloader.sh);"
        echo "opennebula-vitastor: run 'onevita install' after installing OpenNebula."
    fi
}

# On purge: what is left of ours on this front-end once uninstall has run (prerm/preun): the
# unpacked copies of the zipapp in oneadmin's shiv cache (hosts keep theirs), and install's
# state directory with the backups of the files it edited. The directory stays while it still
# holds an install state (someone ran a copied onevita.pyz install after the removal).
purge_leftovers() {
    rm -rf "${DPKG_ROOT:-}"/var/lib/one/.shiv/onevita.pyz_* "${DPKG_ROOT:-}"/var/lib/one/.shiv/.onevita.pyz_*_lock
    if [ ! -e "${DPKG_ROOT:-}/var/lib/one/onevita/install-state.json" ]; then
        rm -rf "${DPKG_ROOT:-}/var/lib/one/onevita"
    fi
}
