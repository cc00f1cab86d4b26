"""datastore/export (a MarketPlaceApp made from an image) and its download side,
``onevita download vitastor://<host>/<image>?VITASTOR_CONF=<path>``."""

from __future__ import annotations

import dataclasses
import sys
import urllib.parse

import orjson

from ..cluster import bridge, pass_logs, run_job
from ..errors import BadRequest, OnevitaError, RemoteError
from ..names import check_conf, check_host, check_image
from ..one.location import scripts_remote_dir
from ..run import CommandFailed, ssh_argv, ssh_failure
from ..vitastor.config import DEFAULT_CONFIG_PATH
from .common import read_action

__all__ = ["download", "export", "parse_url"]

SCHEME = "vitastor"


def export(app_id: str) -> None:
    """``export APP_ID`` (one_market, stdin DS_DRIVER_ACTION_DATA): print IMPORT_INFO with the
    image's ``vitastor://<bridge>/<SOURCE>?VITASTOR_CONF=<path>`` URL (always with a query:
    OpenNebula's url.rb fails without one), its MD5 (IMAGE/TEMPLATE/MD5, else computed on a
    BRIDGE_LIST host by reading the whole image), SIZE in MB, FORMAT raw, DISPOSE NO."""
    from lxml import etree

    action = read_action(app_id)
    image, settings = action.image, action.settings
    source = check_image(image.source)
    conf = check_conf(settings.conf or DEFAULT_CONFIG_PATH)
    # the URL names a host to ssh to even when this datastore's jobs run on the front-end
    host = action.host or bridge(dataclasses.replace(settings, on_frontend=False), int(app_id))
    md5 = image.template.get("MD5") or run_job(action.host, "md5", conf=settings.conf, name=source)["md5"]
    url = f"{SCHEME}://{host}/{source}?" + urllib.parse.urlencode({"VITASTOR_CONF": conf}, safe="/")
    info = etree.Element("IMPORT_INFO")
    for tag, text in (("IMPORT_SOURCE", url), ("MD5", md5), ("SIZE", str(image.size_mb)),
                      ("FORMAT", "raw"), ("DISPOSE", "NO")):
        etree.SubElement(info, tag).text = text
    sys.stdout.write(etree.tostring(info, encoding="unicode") + "\n")


def parse_url(url: str) -> tuple[str, str, str | None]:
    """(host, image, vitastor.conf path or None) of ``vitastor://host/image[?VITASTOR_CONF=path]``,
    every part checked."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != SCHEME:
        raise BadRequest(f"not a {SCHEME}:// URL: {url!r}")
    if parts.fragment:
        raise BadRequest(f"unexpected fragment in {url!r}")
    host = check_host(parts.netloc)
    name = check_image(urllib.parse.unquote(parts.path[1:]))
    try:
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise BadRequest(f"malformed query in {url!r}") from None
    unknown = sorted(set(query) - {"VITASTOR_CONF"})
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]} in {url!r}")
    confs = query.get("VITASTOR_CONF", [])
    if len(confs) > 1:
        raise BadRequest(f"VITASTOR_CONF given more than once in {url!r}")
    return host, name, check_conf(confs[0]) if confs and confs[0] else None


def download(url: str) -> None:
    """Admin command ``download URL``: write the bytes of the image a ``vitastor://`` URL names
    to stdout (what OpenNebula's downloader.sh runs for such URLs), read on the URL's host by
    ``onevita export-stream`` over one ssh call. Failure: exit 1 with the host's reason."""
    import subprocess

    host, name, conf = parse_url(url)
    argv = ssh_argv(host, [f"{scripts_remote_dir()}/onevita/onevita", "export-stream"])
    sys.stdout.flush()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as e:
        raise CommandFailed(f"{argv[0]}: command not found") from e
    _, stderr = proc.communicate(orjson.dumps({"conf": conf, "name": name}))
    reason = pass_logs(stderr)
    if proc.returncode == 0:
        return
    if proc.returncode == 1 and reason:
        raise OnevitaError(" ".join(reason))
    raise RemoteError(ssh_failure(host, proc.returncode, " ".join(reason), "onevita export-stream"))
