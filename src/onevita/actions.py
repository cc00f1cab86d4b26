"""Every command in the zipapp: OpenNebula actions (selected by argv[0]) and admin commands.

Keys are ``<family>/<action>`` taken from the path OpenNebula runs
(``remotes/tm/vitastor/clone`` → ``tm/clone``); values are ``module:function``, imported only
when called, since every OpenNebula call pays the start-up cost. build.py makes one link per
driver action from this table.
"""

from __future__ import annotations

__all__ = ["ACTIONS", "ADMIN", "DRIVER_DIRS"]

# family → directory under OpenNebula's remotes
DRIVER_DIRS = {"tm": "tm/vitastor", "datastore": "datastore/vitastor", "vmm": "vmm/kvm"}

ACTIONS = {
    "tm/clone": "onevita.tm.disk:clone",
    "tm/ln": "onevita.tm.disk:ln",
    "tm/mvds": "onevita.tm.disk:mvds",
    "tm/delete": "onevita.tm.disk:delete",
    "tm/resize": "onevita.tm.disk:resize",
    "tm/snap_create": "onevita.tm.snap:snap_create",
    "tm/snap_create_live": "onevita.tm.snap:snap_create_live",
    "tm/snap_delete": "onevita.tm.snap:snap_delete",
    "tm/snap_revert": "onevita.tm.snap:snap_revert",
    "tm/mv": "onevita.tm.migrate:mv",
    "tm/premigrate": "onevita.tm.migrate:premigrate",
    "tm/postmigrate": "onevita.tm.migrate:postmigrate",
    "tm/failmigrate": "onevita.tm.migrate:failmigrate",
    "tm/context": "onevita.tm.context:context",
    "tm/monitor": "onevita.tm.monitor:monitor",
    "tm/mkimage": "onevita.tm.volatile:mkimage",
    "tm/mkswap": "onevita.tm.volatile:mkswap",
    "tm/cpds": "onevita.tm.saveas:cpds",
    "tm/restore": "onevita.tm.restore:restore",
    "tm/prebackup": "onevita.tm.backup:prebackup",
    "tm/postbackup": "onevita.tm.backup:postbackup",
    "tm/prebackup_live": "onevita.tm.backup:prebackup_live",
    "tm/postbackup_live": "onevita.tm.backup:postbackup_live",
    "datastore/monitor": "onevita.datastore.monitor:monitor",
    "datastore/rm": "onevita.datastore.image:rm",
    "datastore/stat": "onevita.datastore.stat:stat",
    "datastore/clone": "onevita.datastore.image:clone",
    "datastore/snap_delete": "onevita.datastore.snap:snap_delete",
    "datastore/snap_revert": "onevita.datastore.snap:snap_revert",
    "datastore/snap_flatten": "onevita.datastore.snap:snap_flatten",
    "datastore/cp": "onevita.datastore.image:cp",
    "datastore/mkfs": "onevita.datastore.mkfs:mkfs",
    "datastore/export": "onevita.datastore.export:export",
    "vmm/deploy.vitastor": "onevita.vmm.deploy:deploy",
    "vmm/attach_disk.vitastor": "onevita.vmm.attach:attach_disk",
    "vmm/save.vitastor": "onevita.vmm.checkpoint:save",
    "vmm/restore.vitastor": "onevita.vmm.checkpoint:restore",
}

ADMIN = {
    "host-job": "onevita.cluster:host_job",
    "version": "onevita.admin:version",
    "noop": "onevita.admin:noop",
    "download": "onevita.datastore.export:download",
    "export-stream": "onevita.vitastor.copy_jobs:export_stream",
    "install": "onevita.install.command:install",
    "uninstall": "onevita.install.command:uninstall",
    "doctor": "onevita.install.doctor:doctor",
    "firewall": "onevita.install.firewall:firewall",
}
