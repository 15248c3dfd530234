"""Store integrity on object storage (issue 16, "also on an s3:// store"): the damages that apply
to objects, against a real S3 API on loopback (moto's server over HTTP).

A data object or a month's objects deleted, a copied or stray object, a truncated object, bytes
flipped in a data object and in a ledger object: results are never silently wrong, the command
that meets the damage says what is wrong in one line, and ``verify --repair`` followed by ``pull``
brings the store back to the simulator's truth. (``store.json`` does not apply: an object
store's format and grain live in the data table's own description, never in a local file.)

The damage is done to the objects themselves, as a misbehaving sync or lifecycle rule would; the
local read cache (``$HARVESTER_STATE_DIR``) of the machine is dropped first, as on a machine that
had never read the store, so a reader meets the damaged objects.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from harvester.simulator import SimulatorServer, SimulatorSettings
from harvester.store import Store
from harvester.store.opening import cached_reads
from harvester.store.schema import Layout
from harvester.store.tables import Tables
from tests.s3_server import ACCESS_KEY, SECRET_KEY, S3Server
from tests.support import assert_store_matches_truth, cli_env, run_cli, write_config
from tests.test_integrity_checksums import silent_flip

D = dt.date
START, END, TODAY = D(2024, 2, 27), D(2024, 3, 2), "2024-03-10"
PHONES = ["6175550101", "ALL"]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(
        SimulatorSettings(limit=1000, window_seconds=60, today=D(2024, 3, 10))
    ) as server:
        yield server


class S3Store:
    """One store under its own prefix, with the client that damages its objects."""

    def __init__(self, server: S3Server, sim: SimulatorServer, folder: Path) -> None:
        import boto3

        self.server, self.sim, self.folder = server, sim, folder
        self.url = server.new_url()
        self.prefix = self.url.split("/", 3)[3]
        self.env = {**server.env(), "HARVESTER_STATE_DIR": str(folder / "state")}
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )
        config = write_config(folder, sim, phones=PHONES, start=START, end=END)
        config.write_text(config.read_text().replace('path = "store"', f'path = "{self.url}"'))
        self.config = config

    def cli(self, *args: str) -> tuple[int, str, str]:
        done = run_cli(
            [args[0], "-c", str(self.config), *args[1:]], env=cli_env(self.sim, **self.env)
        )
        assert SECRET_KEY not in done.stdout + done.stderr
        return done.returncode, done.stdout, done.stderr

    def all_keys(self) -> list[str]:
        found = self.client.list_objects_v2(Bucket=self.server.bucket, Prefix=self.prefix + "/")
        return sorted(o["Key"][len(self.prefix) + 1 :] for o in found.get("Contents", []))

    def keys(self, under: str) -> list[str]:
        """The Parquet objects below ``under`` (the tables' logs left out)."""
        return [
            key
            for key in self.all_keys()
            if key.startswith(under) and "_delta_log" not in key and key.endswith(".parquet")
        ]

    def copy_from(self, other: S3Store) -> None:
        """Every object of ``other`` under this prefix: the same tables (the Delta log names
        its files relative to the table)."""
        for key in other.all_keys():
            self.client.copy_object(
                Bucket=self.server.bucket,
                Key=f"{self.prefix}/{key}",
                CopySource={"Bucket": self.server.bucket, "Key": f"{other.prefix}/{key}"},
            )

    def get(self, key: str) -> bytes:
        reply = self.client.get_object(Bucket=self.server.bucket, Key=f"{self.prefix}/{key}")
        body: bytes = reply["Body"].read()
        return body

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.server.bucket, Key=f"{self.prefix}/{key}", Body=body)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.server.bucket, Key=f"{self.prefix}/{key}")

    def matches_truth(self) -> None:
        assert_store_matches_truth(Path(self.url), self.sim, PHONES, START, END)

    def heal(self) -> None:
        """verify --repair (its report names the damage it found: the same check a plain verify
        makes, so that one is not run again on the slow loopback S3), pull: the simulator's
        truth again, verify clean. The verifications run in this process (the CLI's own is
        tested locally and above), each as ``harvester verify`` runs it: a read-only command,
        every table opened once (:func:`~harvester.store.opening.cached_reads`), where a bare
        library call lists each table's log a dozen times over the slow loopback S3."""
        with cached_reads():
            repaired = Store(Path(self.url)).verify(repair=True)
        assert repaired.files or repaired.jobs or repaired.metadata, "no damage found"
        assert not repaired.damaged and repaired.repaired is not None
        code, _, err = self.cli("pull", "--today", TODAY)
        assert code == 0, err
        self.matches_truth()
        with cached_reads():
            report = Store(Path(self.url)).verify()
        assert not report.damaged and not report.strays, report


@pytest.fixture(scope="module")
def pulled(
    s3_server: S3Server, sim: SimulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> S3Store:
    """One pull onto the loopback server; each test damages its own copy of it."""
    made = S3Store(s3_server, sim, tmp_path_factory.mktemp("pulled"))
    code, _, err = made.cli("pull", "--today", TODAY)
    assert code == 0, err
    return made


@pytest.fixture
def store(
    s3_server: S3Server,
    sim: SimulatorServer,
    pulled: S3Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> S3Store:
    """A copy of the pulled store under a new prefix and a machine that never read it (an empty
    read cache); this process reads it too."""
    made = S3Store(s3_server, sim, tmp_path)
    made.copy_from(pulled)
    for key, value in made.env.items():
        monkeypatch.setenv(key, value)
    return made


def one_line(stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_deleted_data_object_is_named_and_refetched(store: S3Store) -> None:
    victim = store.keys("data/")[-1]
    store.delete(victim)
    code, out, _ = store.cli("status")
    assert code == 0 and "needs verifying: 1 files" in out, out
    code, _, err = store.cli("query", "calls")
    assert code == 1, err
    one_line(err, f"{store.url}/{victim} is missing", "harvester verify --repair")
    store.heal()


def test_a_deleted_month_is_refetched(store: S3Store) -> None:
    for key in store.keys("data/month=2024-02/"):
        store.delete(key)
    code, _, err = store.cli("pull", "--today", TODAY)
    assert code == 1
    one_line(err, "month=2024-02", "missing", "harvester verify --repair")
    code, out, _ = store.cli("verify")
    assert code == 1 and "2024-02-27: 0 rows stored where the ledger recorded" in out, out
    store.heal()


def test_copied_and_stray_objects_change_no_result_are_listed_and_moved(store: S3Store) -> None:
    original = store.keys("data/")[0]
    copy = original.replace(".parquet", " (copy).parquet")
    store.put(copy, store.get(original))
    store.put("data/stray.parquet", store.get(original))
    store.matches_truth()
    code, out, _ = store.cli("verify")
    assert code == 0, out
    assert copy.rsplit("/", 1)[1] in out and "stray.parquet" in out, out
    code, out, err = store.cli("verify", "--repair")
    assert code == 0, out + err
    assert copy not in store.keys("data/") and "data/stray.parquet" not in store.keys("data/")
    moved = store.keys("quarantine/")
    assert any(k.endswith(copy) for k in moved) and any(k.endswith("stray.parquet") for k in moved)
    store.matches_truth()


def test_a_truncated_object_stops_compact_in_one_line(store: S3Store) -> None:
    victim = store.keys("data/")[0]
    body = store.get(victim)
    store.put(victim, body[: len(body) // 2])
    code, _, err = store.cli("compact")
    assert code == 1
    one_line(err, victim.rsplit("/", 1)[1], "harvester verify --repair")
    store.heal()
    assert any(k.endswith(victim) for k in store.keys("quarantine/"))  # moved aside, kept


def test_a_flipped_byte_in_a_data_object_is_caught_by_its_checksum(store: S3Store) -> None:
    """Read once before the damage (this machine's read cache holds a sound copy): ``verify``
    still reads the object itself."""
    Tables(Layout(Path(store.url))).files("data")
    victim = max(store.keys("data/"), key=lambda k: len(store.get(k)))
    data = bytearray(store.get(victim))
    offset = silent_flip(bytes(data), "visits")
    assert offset is not None
    data[offset] ^= 0x01
    store.put(victim, bytes(data))
    code, out, _ = store.cli("verify")
    assert code == 1 and victim.rsplit("/", 1)[1] in out and "CRC" in out, out
    store.heal()


def test_flipped_bytes_in_a_ledger_object_are_named(store: S3Store) -> None:
    victim = store.keys("ledger/")[0]
    data = bytearray(store.get(victim))
    start = len(data) // 2
    for i in range(start, start + 16):
        data[i] ^= 0xFF
    store.put(victim, bytes(data))
    with pytest.raises(Exception):  # noqa: B017 - the damage reads as any Arrow error
        pq.ParquetFile(io.BytesIO(bytes(data)), page_checksum_verification=True).read()
    for command in (["status"], ["plan", "--today", TODAY]):
        code, _, err = store.cli(*command)
        assert code == 1, (command, err)
        one_line(err, victim.rsplit("/", 1)[1], "harvester verify --repair")
    store.heal()
