#!/usr/bin/python3
"""A test-local rsync backup datastore and downloader, written for this suite (no OpenNebula code).

One file, installed under several names in a test remotes tree, where an OpenNebula install
puts the real ones (``remotes/datastore/rsync/{backup,ls,increment_flatten}``,
``remotes/datastore/downloader.sh``); the name it runs under picks the action. It keeps the
rsync driver's layout, arguments, stdin and output formats (backup-contract.md §2-§4), so the
suite can run backup → restore without OpenNebula installed:

* ``backup <host>:<vm_dir> <ids> <deploy_id> <bj_id> <vm_id> <ds_id>`` (stdin: plain
  ``<DS_DRIVER_ACTION_DATA><DATASTORE/><VM/>``) copies the staging directory
  (``<vm_dir>/backup``, or ``BACKUP_BASE_PATH/<vm_id>/backup`` from datastore.conf) to
  ``<BASE_PATH>/<vm_id>/<6 hex>/`` and prints ``<6 hex> <MB> raw``.
* ``ls [-i <increment>]`` (stdin: plain DS_DRIVER_ACTION_DATA with DATASTORE and IMAGE) prints
  ``{"<disk id>":"rsync://<ds>/<bj>/<id>:<dir>,…<abs path of a file>", …}``, the chain cut at
  ``<increment>``, for the files of the directory rsync/ls picks (see ``ls``).
* ``increment_flatten <image id>`` (stdin: base64 DS_DRIVER_ACTION_DATA, EXTRA_DATA/KEEP_LAST)
  merges the oldest increments into one full backup as rsync's does: rebase, ``qemu-img
  commit``, ``mv`` to the newest merged name, older directories removed; prints
  ``<MB> <id>:<dir>,…``.
* ``downloader.sh [--nodecomp] <url> <to|->``: ``rsync://`` URLs are reassembled as OpenNebula's
  rsync downloader does (one element: the file as is; a chain: ``qemu-img rebase -u -F qcow2``
  pairwise, then ``qemu-img convert -O qcow2`` of the last into a temporary directory) and
  streamed; a local path is copied. The backup datastore's BASE_PATH and RSYNC_TMP_DIR come from
  oned (``one.datastore.info``, ONE_XMLRPC/ONE_AUTH), as the real downloader asks for them.

The "rsync host" is this machine: files are copied locally instead of over ssh.

Fault injection for tests: ``ONEVITA_TEST_DOWNLOAD_FAIL=<disk index>:<bytes>`` makes the
downloader stop with an error after that many bytes of that disk's data.
"""

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
import xmlrpc.client

CHUNK = 1 << 20


def fail(message, code=255):
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.exit(code)


def text(node, path, default=""):
    found = node.find(path)
    return (found.text or "").strip() if found is not None and found.text else default


def run(argv):
    proc = subprocess.run(argv, capture_output=True, check=False)
    if proc.returncode:
        fail(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def remotes():
    """The remotes tree this copy lives in (datastore/rsync/<action> or datastore/<file>)."""
    here = os.path.dirname(os.path.abspath(sys.argv[0]))
    return os.path.dirname(here) if os.path.basename(here) == "datastore" else os.path.dirname(os.path.dirname(here))


def datastore_conf():
    """KEY=value lines of remotes/etc/datastore/datastore.conf (read, never sourced)."""
    values = {}
    try:
        with open(os.path.join(remotes(), "etc", "datastore", "datastore.conf")) as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep and not key.startswith("#"):
                    values[key.strip()] = value.strip().strip("'\"")
    except OSError:
        pass
    return values


class Image:
    """A backup IMAGE: increments (id → directory), VM id, backup job id."""

    def __init__(self, root):
        image = root.find("IMAGE")
        self.increments = {}
        for inc in image.findall("BACKUP_INCREMENTS/INCREMENT"):
            self.increments[int(text(inc, "ID"))] = text(inc, "SOURCE")
        if not self.increments:
            self.increments[0] = text(image, "SOURCE")
        self.vm_id = int(text(image, "VMS/ID"))
        self.bj_id = text(image, "TEMPLATE/BACKUP_JOB_ID")
        self.format = text(image, "FORMAT")

    def chain(self, up_to=-1):
        return ",".join(f"{k}:{v}" for k, v in sorted(self.increments.items()) if up_to == -1 or k <= up_to)


# backup ---------------------------------------------------------------------------------------
def backup(args):
    location, _ids, _deploy, _bj, vm_id, _ds = args
    root = ET.fromstring(sys.stdin.buffer.read())
    ds = root.find("DATASTORE")
    base = text(ds, "BASE_PATH").rstrip("/")
    vm_dir = location.split(":", 1)[1]
    conf = datastore_conf().get("BACKUP_BASE_PATH", "").rstrip("/")
    stage = f"{conf}/{vm_id}/backup" if conf else f"{vm_dir.rstrip('/')}/backup"
    if not os.path.isdir(stage):
        fail(f"Error copying backup: {stage}: no such directory")
    backup_id = secrets.token_hex(3)
    target = f"{base}/{vm_id}/{backup_id}/"
    os.makedirs(target)
    size_mb = int(run(["du", "-sm", stage]).split()[0])
    run(["rsync", "-aS", f"{stage}/", target])
    disks = sorted(name for name in os.listdir(target) if name.startswith("disk."))
    fmt = "rbd" if disks and disks[0].rsplit(".", 1)[-1] in ("rbd2", "rbdiff") else "raw"
    print(f"{backup_id} {size_mb} {fmt}")


# ls -------------------------------------------------------------------------------------------
def ls(args):
    increment = -1
    while args:
        if args[0] in ("-i", "--increment") and len(args) > 1:
            increment, args = int(args[1]), args[2:]
        else:
            fail(f"ls: unexpected argument {args[0]}")
    root = ET.fromstring(sys.stdin.buffer.read())
    image = Image(root)
    ds_id, base = text(root, "DATASTORE/ID"), text(root, "DATASTORE/BASE_PATH")
    proto = "rsync+rbd" if image.format == "rbd" else "rsync"
    url = f"{proto}://{ds_id}/{image.bj_id}/{image.chain(increment)}"
    # rsync/ls lists the directory of TEMPLATE/INCREMENT_ID (``&.text.to_i``: 0 when absent, so
    # the first one), else of the last increment (after a KEEP_LAST flatten there is no 0)
    selected = int(text(root, "TEMPLATE/INCREMENT_ID", "0") or 0)
    snap = image.increments.get(selected) or image.increments[list(image.increments)[-1]]
    snap_dir = os.path.normpath(f"{base}/{image.vm_id}/{snap}")
    if not os.path.isdir(snap_dir):
        fail(f"Error listing backups: {snap_dir}: no such directory")
    disks = {}
    for name in os.listdir(snap_dir):
        match = re.search(r"disk\.([0-9]+|tpm)", name)
        if name.startswith("disk.") and match and os.path.isfile(os.path.join(snap_dir, name)):
            disks[match.group(1)] = f"{url}{snap_dir}/{name}"
    print(json.dumps(disks, separators=(",", ":")))


# increment_flatten ----------------------------------------------------------------------------
def increment_flatten(args):
    root = ET.fromstring(base64.b64decode(sys.stdin.buffer.read()))
    image = Image(root)
    keep_last = int(text(root, "EXTRA_DATA/KEEP_LAST", "0") or 0)
    ids = sorted(image.increments)
    if len(ids) <= keep_last:
        return
    merged_ids = ids[:len(ids) - keep_last + 1]
    base = text(root, "DATASTORE/BASE_PATH")
    dirs = [os.path.normpath(f"{base}/{image.vm_id}/{image.increments[i]}") for i in merged_ids]
    by_disk = {}
    for inc_id, directory in zip(merged_ids, dirs):
        for name in sorted(os.listdir(directory)):
            parts = name.split(".")
            if name.startswith("disk.") and len(parts) == 3 and parts[2] == str(inc_id):
                by_disk.setdefault(parts[1], []).append(os.path.join(directory, name))
    size = 0
    for paths in by_disk.values():
        for backing, target in zip(paths, paths[1:]):
            run(["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", backing, target])
        if len(paths) > 1:
            run(["qemu-img", "commit", "-f", "qcow2", "-b", paths[0], paths[-1]])
            os.replace(paths[0], paths[-1])
        size += json.loads(run(["qemu-img", "info", "--output", "json", paths[-1]]))["actual-size"]
    for directory in dirs[:-1]:
        shutil.rmtree(directory)
    kept = [f"{i}:{image.increments[i]}" for i in ids[-keep_last:]]
    kept[0] = f"{ids[-keep_last]}:{image.increments[merged_ids[-1]]}"
    print(f"{size >> 20} {','.join(kept)}")


# downloader.sh --------------------------------------------------------------------------------
def one_datastore(ds_id):
    """``one.datastore.info`` through the oned the action talks to."""
    endpoint = os.environ.get("ONE_XMLRPC", "http://localhost:2633/RPC2")
    with open(os.environ.get("ONE_AUTH") or os.path.expanduser("~/.one/one_auth")) as f:
        secret = f.read().strip()
    reply = xmlrpc.client.ServerProxy(endpoint).one.datastore.info(secret, ds_id, True)
    if not reply[0]:
        fail(reply[1])
    return ET.fromstring(reply[1])


def rsync_source(url):
    """The path of the qcow2 to stream for an rsync:// URL, and a directory to remove after."""
    proto, rest = url.split("://", 1)
    if proto != "rsync":
        fail(f"{proto}:// backups are Ceph's rbd export format; this test datastore has none")
    tokens = rest.split("/", 3)
    if len(tokens) < 4:
        fail(f"malformed rsync URL {url}")
    ds_id, chain, path = int(tokens[0]), [e.split(":") for e in tokens[2].split(",")], "/" + tokens[3]
    index = os.path.basename(path).split(".")[1]
    match = re.search(f"/{ds_id}/([0-9]+)/[^/]+/[^/]+$", path)
    if not match:
        fail(f"no VM id in {path}")
    vm_id = match.group(1)
    if len(chain) == 1:
        return path, None
    ds = one_datastore(ds_id)
    base = text(ds, "BASE_PATH")
    tmp_root = text(ds, "TEMPLATE/RSYNC_TMP_DIR") or "/var/tmp"
    paths = [os.path.normpath(f"{base}/{vm_id}/{snap}/disk.{index}.{inc}") for inc, snap in chain]
    tmp = f"{tmp_root}/{uuid.uuid4()}"
    os.makedirs(tmp)
    try:
        for backing, target in zip(paths, paths[1:]):
            run(["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", backing, target])
        out = f"{tmp}/{os.path.basename(paths[-1])}"
        run(["qemu-img", "convert", "-O", "qcow2", paths[-1], out])
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, tmp


def downloader(args):
    nodecomp, positional = False, []
    it = iter(args)
    for arg in it:
        if arg in ("-n", "--nodecomp"):
            nodecomp = True
        elif arg in ("-m", "--md5", "-s", "--sha1", "-l", "--limit", "-c", "--max-size"):
            next(it, None)
        elif arg in ("-o", "--noretry", "--"):
            pass
        else:
            positional.append(arg)
    if len(positional) != 2:
        fail("Arguments error")
    source, to = positional
    clean = None
    if re.match(r"(rsync|rsync\+rbd)://", source):
        path, clean = rsync_source(source)
        index = os.path.basename(path).split(".")[1]
    elif "://" in source:
        fail(f"this test downloader reads rsync:// URLs and local files, not {source}")
    else:
        path, index = source, ""
    limit = None
    spec = os.environ.get("ONEVITA_TEST_DOWNLOAD_FAIL", "")
    if spec and spec.split(":")[0] == index:
        limit = int(spec.split(":")[1])
    try:
        with open(path, "rb") as src:
            out = sys.stdout.buffer if to == "-" else open(to, "wb")  # noqa: SIM115 (closed at exit)
            head = src.read(2)
            if not nodecomp and head == b"\x1f\x8b":
                import gzip
                src.seek(0)
                src = gzip.GzipFile(fileobj=src)
                head = b""
            sent = 0
            data = head
            while True:
                if not data:
                    data = src.read(CHUNK)
                    if not data:
                        break
                if limit is not None and sent + len(data) > limit:
                    out.write(data[:limit - sent])
                    out.flush()
                    fail("Error copying")
                out.write(data)
                sent += len(data)
                data = b""
            out.flush()
    except OSError as e:
        fail(f"Error copying: {e}")
    finally:
        if clean:
            shutil.rmtree(clean, ignore_errors=True)


ACTIONS = {"backup": backup, "ls": ls, "increment_flatten": increment_flatten, "downloader.sh": downloader}

if __name__ == "__main__":
    name = os.path.basename(sys.argv[0])
    if name not in ACTIONS:
        fail(f"rsyncds.py runs as one of {', '.join(sorted(ACTIONS))}, not {name}")
    ACTIONS[name](sys.argv[1:])
