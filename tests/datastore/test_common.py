"""What every datastore action shares: the BRIDGE_LIST host and the decoding of stdin."""

from __future__ import annotations

import base64

import pytest

from tests.cloud import IMAGE_DS, Cloud
from tests.datastore.util import image_data, make_image, names
from tests.harness import documents as docs

# actions that decode DS_DRIVER_ACTION_DATA, with an id argument
ACTIONS = ["monitor", "rm", "clone", "stat", "snap_delete", "snap_revert", "snap_flatten"]


class TestBridgeList:
    def test_missing_bridge_list(self, cloud: Cloud) -> None:
        """ssh mode needs a BRIDGE_LIST host, with the bash driver's message; the front-end
        mode runs the job itself and does not."""
        cloud.add_datastores(BRIDGE_LIST=None)  # type: ignore[arg-type]
        src = f"{cloud.prefix}-7"
        make_image(cloud, src)
        result = cloud.run("datastore/rm", "7", stdin=image_data(cloud, 7, source=src))
        if cloud.mode == "ssh":
            assert (result.rc, result.reason) == (1, "Datastore template missing 'BRIDGE_LIST' attribute.")
            assert result.errors
            assert names(cloud) == {src}
        else:
            assert result.rc == 0, result.stderr
            assert names(cloud) == set()

    @pytest.mark.parametrize("action", ["monitor", "clone", "snap_delete"])
    def test_empty_bridge_list(self, cloud: Cloud, action: str) -> None:
        cloud.add_datastores(BRIDGE_LIST="  ")
        stdin = cloud.action_data() if action == "monitor" else image_data(  # monitor gets no IMAGE
            cloud, 7, source=f"{cloud.prefix}-7", path=f"{cloud.prefix}-7", target_snapshot=0)
        result = cloud.run(f"datastore/{action}", "7", stdin=stdin)
        if cloud.mode == "ssh":
            assert (result.rc, result.reason) == (1, "Datastore template missing 'BRIDGE_LIST' attribute.")
        else:
            assert result.reason != "Datastore template missing 'BRIDGE_LIST' attribute."

    def test_bad_bridge_host_is_refused(self, cloud: Cloud) -> None:
        cloud.add_datastores(BRIDGE_LIST="bridge1 -oProxyCommand=x")
        result = cloud.run("datastore/monitor", str(IMAGE_DS), stdin=cloud.action_data())
        assert (result.rc, result.reason) == (1, "invalid host name '-oProxyCommand=x'")


class TestMalformedStdin:
    @pytest.mark.parametrize("action", ACTIONS)
    def test_not_base64(self, cloud: Cloud, action: str) -> None:
        result = cloud.run(f"datastore/{action}", "7", stdin=b"<DS_DRIVER_ACTION_DATA/>")
        assert (result.rc, result.stdout) == (1, "")
        assert result.reason == "DS_DRIVER_ACTION_DATA on stdin is not base64: characters outside the base64 alphabet"
        assert result.errors

    def test_bad_base64_padding(self, cloud: Cloud) -> None:
        result = cloud.run("datastore/rm", "7", stdin=b"PERTX0RSSVZFUl9BQ1RJT05fREFUQT4")
        assert (result.rc, result.reason) == (1, "DS_DRIVER_ACTION_DATA on stdin is not base64: bad length or padding")

    @pytest.mark.parametrize("action", ACTIONS)
    def test_empty_stdin(self, cloud: Cloud, action: str) -> None:
        result = cloud.run(f"datastore/{action}", "7", stdin=b"\n")
        assert (result.rc, result.reason) == (1, "no DS_DRIVER_ACTION_DATA on stdin")

    @pytest.mark.parametrize("action", ACTIONS)
    def test_broken_xml(self, cloud: Cloud, action: str) -> None:
        text = "<DS_DRIVER_ACTION_DATA>" + cloud.datastore_doc(IMAGE_DS)
        result = cloud.run(f"datastore/{action}", "7", stdin=docs.encode_b64(text).encode())
        assert (result.rc, result.stdout) == (1, "")
        column = len(text) + 1
        assert result.reason == ("malformed DS_DRIVER_ACTION_DATA XML: Premature end of data in tag "
                                 f"DS_DRIVER_ACTION_DATA line 1, line 1, column {column}")

    @pytest.mark.parametrize("action", ACTIONS)
    def test_no_datastore(self, cloud: Cloud, action: str) -> None:
        image = docs.image_xml(7, name="img", source=f"{cloud.prefix}-7", size_mb=64, ds_id=IMAGE_DS,
                               persistent=True)
        stdin = docs.encode_b64(docs.ds_driver_action_data(image)).encode()
        result = cloud.run(f"datastore/{action}", "7", stdin=stdin)
        assert (result.rc, result.reason) == (1, "DS_DRIVER_ACTION_DATA has no DATASTORE")

    def test_base64_split_over_lines_is_accepted(self, cloud: Cloud) -> None:
        """Trailing newlines (echo) are fine; the data itself is one line, as oned sends it."""
        result = cloud.run("datastore/monitor", str(IMAGE_DS), stdin=cloud.action_data() + b"\n")
        assert result.rc == 0, result.stderr

    def test_datastore_without_id(self, cloud: Cloud) -> None:
        text = "<DS_DRIVER_ACTION_DATA><DATASTORE><NAME>x</NAME></DATASTORE></DS_DRIVER_ACTION_DATA>"
        result = cloud.run("datastore/monitor", "101", stdin=base64.b64encode(text.encode()))
        assert (result.rc, result.reason) == (1, "DATASTORE: ID is missing or not an integer ('')")

    @pytest.mark.parametrize("action", ["rm", "clone", "snap_delete", "monitor"])
    def test_image_id_must_be_a_number(self, cloud: Cloud, action: str) -> None:
        result = cloud.run(f"datastore/{action}", "seven", stdin=image_data(cloud, 7, source=f"{cloud.prefix}-7"))
        assert result.rc == 1
        assert result.reason.endswith("must be an integer, got 'seven'")

    def test_action_without_image(self, cloud: Cloud) -> None:
        result = cloud.run("datastore/rm", "7", stdin=cloud.action_data())
        assert (result.rc, result.reason) == (1, "DS_DRIVER_ACTION_DATA has no IMAGE")
