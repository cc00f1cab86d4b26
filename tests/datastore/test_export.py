"""datastore/export through its dist/remotes link and ``onevita download`` through the launcher,
in both job modes."""

from __future__ import annotations

import hashlib
import subprocess

import pytest
from lxml import etree

from tests.cloud import REMOTES, Cloud
from tests.datastore.util import MIB, image_data, make_image, snapshot

CHUNK = b"".join(bytes([i]) * 4096 for i in range(1, 9))


def sample_image(cloud: Cloud, name: str = "") -> tuple[str, bytes]:
    """An 8 MiB image with data in two layers and holes; (name, all its bytes)."""
    name = name or f"{cloud.prefix}-5"
    make_image(cloud, name, 8, CHUNK)
    snapshot(cloud, name, 0)
    cloud.cluster.write(name, 5 * MIB + 4096, CHUNK)
    return name, cloud.cluster.read(name, 0, 8 * MIB)


def export(cloud: Cloud, app_id: int = 7, **template: str) -> dict[str, str]:
    """Run export for image 5 as MarketPlaceApp ``app_id``; IMPORT_INFO's fields."""
    result = cloud.ok("datastore/export", str(app_id),
                      stdin=image_data(cloud, 5, source=f"{cloud.prefix}-5", size_mb=8, template=template))
    root = etree.fromstring(result.stdout.encode())
    assert root.tag == "IMPORT_INFO"
    return {child.tag: child.text or "" for child in root}


def download(cloud: Cloud, url: str) -> subprocess.CompletedProcess[bytes]:
    """``onevita download URL`` through the launcher, as downloader.sh runs it."""
    return cloud.process([str(REMOTES / "onevita" / "onevita"), "download", url])


def reason(proc: subprocess.CompletedProcess[bytes]) -> str:
    return "".join(line.strip() for line in proc.stderr.decode().splitlines()
                   if line.strip() and not line.startswith(("ERROR:", "INFO:", "WARN:", "DEBUG:")))


class TestExport:
    @pytest.mark.parametrize(("app_id", "bridge"), [(7, "bridge2"), (8, "bridge1")])
    def test_import_info(self, cloud: Cloud, app_id: int, bridge: str) -> None:
        """The URL names a BRIDGE_LIST host (app id % 2) and the datastore's vitastor.conf; the
        MD5 is that of every byte of the image."""
        name, data = sample_image(cloud)
        info = export(cloud, app_id)
        conf = cloud.cluster.config_path
        assert info == {"IMPORT_SOURCE": f"vitastor://{bridge}/{name}?VITASTOR_CONF={conf}",
                        "MD5": hashlib.md5(data).hexdigest(), "SIZE": "8", "FORMAT": "raw", "DISPOSE": "NO"}

    def test_md5_from_the_image_template(self, cloud: Cloud) -> None:
        sample_image(cloud)
        assert export(cloud, MD5="0123456789abcdef0123456789abcdef")["MD5"] == "0123456789abcdef0123456789abcdef"

    def test_default_conf_path_is_in_the_url(self, cloud: Cloud) -> None:
        name, _ = sample_image(cloud)
        cloud.add_datastores(VITASTOR_CONF=None)  # type: ignore[arg-type]
        result = cloud.run("datastore/export", "7", stdin=image_data(
            cloud, 5, source=name, size_mb=8, template={"MD5": "0123456789abcdef0123456789abcdef"}))
        assert result.rc == 0, result.stderr
        assert (f"<IMPORT_SOURCE>vitastor://bridge2/{name}?VITASTOR_CONF=/etc/vitastor/vitastor.conf"
                "</IMPORT_SOURCE>") in result.stdout

    def test_missing_image_fails(self, cloud: Cloud) -> None:
        result = cloud.run("datastore/export", "7", stdin=image_data(cloud, 5, source=f"{cloud.prefix}-5"))
        assert (result.rc, result.stdout) == (1, "")
        assert result.reason.endswith(f"Vitastor image {cloud.prefix}-5 does not exist")


class TestDownload:
    def test_download_is_byte_exact(self, cloud: Cloud) -> None:
        _, data = sample_image(cloud)
        url = export(cloud)["IMPORT_SOURCE"]
        proc = download(cloud, url)
        assert proc.returncode == 0, proc.stderr
        assert len(proc.stdout) == 8 * MIB
        assert proc.stdout == data
        assert hashlib.md5(proc.stdout).hexdigest() == export(cloud)["MD5"]

    def test_download_of_a_snapshot(self, cloud: Cloud) -> None:
        name, _ = sample_image(cloud)
        snap = cloud.cluster.read(f"{name}@0", 0, 8 * MIB)
        proc = download(cloud, f"vitastor://bridge1/{name}@0?VITASTOR_CONF={cloud.cluster.config_path}")
        assert (proc.returncode, proc.stdout == snap) == (0, True), proc.stderr

    def test_missing_image(self, cloud: Cloud) -> None:
        proc = download(cloud, f"vitastor://bridge1/nothere?VITASTOR_CONF={cloud.cluster.config_path}")
        assert (proc.returncode, proc.stdout) == (1, b"")
        assert reason(proc).endswith("nothere does not exist")

    @pytest.mark.parametrize(("url", "error"), [
        ("rbd://bridge1/one-5?VITASTOR_CONF=/etc/vitastor/vitastor.conf",
         "not a vitastor:// URL: 'rbd://bridge1/one-5?VITASTOR_CONF=/etc/vitastor/vitastor.conf'"),
        ("vitastor://-oProxyCommand=x/one-5?VITASTOR_CONF=/etc/v.conf", "invalid host name '-oProxyCommand=x'"),
        ("vitastor://user@bridge1/one-5?VITASTOR_CONF=/etc/v.conf", "invalid host name 'user@bridge1'"),
        ("vitastor://bridge1/one-5;rm?VITASTOR_CONF=/etc/v.conf", "invalid Vitastor image name 'one-5;rm'"),
        ("vitastor://bridge1/a/b?VITASTOR_CONF=/etc/v.conf", "invalid Vitastor image name 'a/b'"),
        ("vitastor://bridge1/one-5?VITASTOR_CONF=../etc/v.conf", "invalid VITASTOR_CONF path '../etc/v.conf'"),
        ("vitastor://bridge1/one-5?VITASTOR_CONF=/etc/../v.conf", "invalid VITASTOR_CONF path '/etc/../v.conf'"),
        ("vitastor://bridge1/one-5?VITASTOR_CONF=/etc/v%20x.conf", "invalid VITASTOR_CONF path '/etc/v x.conf'"),
        ("vitastor://bridge1/one-5?POOL=x", "unknown parameter POOL in 'vitastor://bridge1/one-5?POOL=x'"),
        ("vitastor://bridge1/one-5?VITASTOR_CONF=/a&VITASTOR_CONF=/b",
         "VITASTOR_CONF given more than once in 'vitastor://bridge1/one-5?VITASTOR_CONF=/a&VITASTOR_CONF=/b'"),
    ])
    def test_bad_urls(self, cloud: Cloud, url: str, error: str) -> None:
        proc = download(cloud, url)
        assert (proc.returncode, proc.stdout, reason(proc)) == (1, b"", error)

    def test_export_stream_rejects_a_bad_request(self, cloud: Cloud) -> None:
        proc = cloud.process([str(REMOTES / "onevita" / "onevita"), "export-stream"], stdin=b'{"name": "a;b"}',
                             timeout=60)
        assert (proc.returncode, proc.stdout, reason(proc)) == (1, b"", "invalid Vitastor image name 'a;b'")
