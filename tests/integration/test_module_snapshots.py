"""Terraform modules run as the catalog published them: snapshots by content hash.

Publishing an item stores a snapshot of every module it names and the item's event names it; a
request pinned to an older definition still runs the older content after the catalog's files
moved on; a git module is fetched at a tag (never a branch) and snapshotted like a local one; a
snapshot whose archive does not match its hash is refused. Real PostgreSQL, git and Terraform.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import asyncpg
import pytest
import pytest_asyncio

from conftest import REPO, fresh_database
from pao.catalog.bootstrap import CatalogParts
from pao.catalog.modules import ModuleSnapshots, module_hash_of, pack, read_folder
from pao.catalog.refresh import refresh_catalog
from pao.catalog.sources import DirectorySource, GitSource
from pao.catalog.view import CatalogView
from pao.contracts import events as ev
from pao.contracts.catalog import RefreshResult
from pao.contracts.envelope import EventEnvelope
from pao.fulfillment.definitions import Definitions, on_item_published
from pao.fulfillment.executors import ActionError, TerraformExecutor
from pao.fulfillment.modules import ModuleCache
from pao.fulfillment.terraform import TerraformRunner
from pao.shared.consumer import Delivery
from pao.shared.database import create_pool
from pao.shared.eventstore import EventStore

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(shutil.which("git") is None, reason="git is not on PATH"),
]

ITEM = "parameter-record"
ITEM_FILE = "security/parameter-record.yaml"
ACTION = "create_parameter"
LOCAL = "modules/parameterstore"
#: An item whose one action runs the catalog's parameterstore module (built-in resources only).
ITEM_TEXT = (REPO / "tests" / "fixtures" / "items" / "parameter-record.yaml").read_text()
needs_terraform = pytest.mark.skipif(
    shutil.which("terraform") is None, reason="terraform is not on PATH"
)


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


@dataclass
class Database:
    dsn: str
    pool: asyncpg.Pool
    store: EventStore


@pytest_asyncio.fixture(loop_scope="session")
async def db(postgres_server: str) -> AsyncIterator[Database]:
    """A database of the test's own: its catalog stream is nobody else's."""
    async with fresh_database(postgres_server) as dsn:
        pool = await create_pool(dsn, min_size=1, max_size=8, application_name="pao-tests")
        try:
            yield Database(dsn, pool, EventStore(pool))
        finally:
            await pool.close()


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A copy of the repository's catalog, to change."""
    root = tmp_path / "catalog"
    shutil.copytree(
        REPO / "catalog",
        root,
        ignore=shutil.ignore_patterns("tests", "__pycache__", ".terraform", "*.tfstate*"),
    )
    (root / ITEM_FILE).write_text(ITEM_TEXT)
    return root


@dataclass
class ModuleRepo:
    """A bare repository holding a module under terraform/parameterstore: tag v1.0.0 (annotated)
    at `tagged`, then one more commit on main whose VERSION says 2.0.0-dev."""

    bare: Path
    tagged: str
    head: str

    def source(self, query: str) -> str:
        return f"git::file://{self.bare}//terraform/parameterstore{query}"


@pytest.fixture
def module_repo(tmp_path: Path) -> ModuleRepo:
    bare, work = tmp_path / "modules.git", tmp_path / "modules-work"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    git("config", "user.email", "platform@example.com", cwd=work)
    git("config", "user.name", "Platform", cwd=work)
    module = work / "terraform" / "parameterstore"
    shutil.copytree(REPO / "catalog" / LOCAL, module, ignore=shutil.ignore_patterns(".terraform"))
    (module / "VERSION").write_text("1.0.0\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "parameterstore 1.0.0", cwd=work)
    git("tag", "-a", "v1.0.0", "-m", "release 1.0.0", cwd=work)
    tagged = git("rev-parse", "HEAD", cwd=work).strip()
    (module / "VERSION").write_text("2.0.0-dev\n")
    git("commit", "-q", "-am", "towards 2.0.0", cwd=work)
    head = git("rev-parse", "HEAD", cwd=work).strip()
    git("push", "-q", "origin", "HEAD:main", "--tags", cwd=work)
    return ModuleRepo(bare, tagged, head)


def use_module(catalog: Path, source: str) -> None:
    item = catalog / ITEM_FILE
    text = item.read_text()
    assert f"module: {LOCAL}" in text
    item.write_text(text.replace(f"module: {LOCAL}", f'module: "{source}"'))


def only_the_item(catalog: Path) -> None:
    """Leave the catalog with the parameter item alone (and its module folder)."""
    for path in catalog.glob("*/*.yaml"):
        if path.parent.name not in ("schema", "templates") and path != catalog / ITEM_FILE:
            path.unlink()


async def publish(
    db: Database, catalog: Path, snapshots: ModuleSnapshots | None = None
) -> tuple[CatalogView, RefreshResult]:
    """Refresh the catalog into the test's database; the view and the refresh's result."""
    view = CatalogView()
    source = DirectorySource(catalog, modules=snapshots)
    result = await refresh_catalog(source=source, store=db.store, view=view)
    return view, result


async def learn(db: Database) -> None:
    """What fulfilment's catalog consumer does with the catalog's item events."""
    for envelope in await db.store.read_stream("catalog"):
        event = ev.decode(envelope)
        if isinstance(event, ev.CatalogItemPublished | ev.CatalogItemUpdated):
            async with db.pool.acquire() as conn, conn.transaction():
                await on_item_published(Delivery(event, envelope, conn))


def executor(db: Database, catalog: Path, work: Path) -> TerraformExecutor:
    runner = TerraformRunner(work_root=work, state_dsn=db.dsn, timeout=120)
    return TerraformExecutor(
        runner,
        catalog,
        definitions=Definitions(db.pool),
        modules=ModuleCache(db.pool, runner.work_root / "modules"),
    )


async def item_events(store: EventStore, item_id: str) -> list[ev.Event]:
    found = []
    for envelope in await store.read_stream("catalog"):
        event = ev.decode(envelope)
        is_item = isinstance(event, ev.CatalogItemPublished | ev.CatalogItemUpdated)
        if is_item and event.item_id == item_id:
            found.append(event)
    return found


def members(archive: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return tar.getmembers()


async def test_publishing_an_item_stores_its_module_snapshot_and_its_event_names_it(
    catalog_parts: CatalogParts, pool: asyncpg.Pool, store: EventStore
) -> None:
    published = (await item_events(store, "postgresql-standard"))[-1]
    module_hash = published.modules["modules/postgresql"]
    assert published.modules == {"modules/postgresql": module_hash}
    assert module_hash.startswith("sha256:")
    assert published.item_hash == ev.item_hash(published.item)  # the definition's hash only
    assert catalog_parts.view.modules["postgresql-standard"] == published.modules
    assert (await item_events(store, "postgresql-rds"))[-1].modules == {}  # no Terraform action

    row = await pool.fetchrow(
        "SELECT archive, files, bytes, source, revision FROM terraform_modules "
        "WHERE module_hash = $1",
        module_hash,
    )
    assert row is not None
    assert module_hash_of(row["archive"]) == module_hash
    assert (row["source"], row["revision"]) == ("modules/postgresql", None)
    on_disk = sorted(
        p.relative_to(REPO / "catalog" / "modules" / "postgresql").as_posix()
        for p in (REPO / "catalog" / "modules" / "postgresql").rglob("*")
        if p.is_file() and ".terraform" not in p.parts and ".tfstate" not in p.name
    )
    stored = members(row["archive"])
    assert [m.name for m in stored] == on_disk
    assert row["files"] == len(on_disk)
    assert row["bytes"] == sum(m.size for m in stored)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in stored} == {(0, 0, 0, "", "")}


async def test_a_snapshot_depends_only_on_the_module_files(tmp_path: Path) -> None:
    module = tmp_path / "module"
    shutil.copytree(REPO / "catalog" / LOCAL, module)
    first = pack(read_folder(module), source=LOCAL)
    # Terraform's working data, state files and file times do not count.
    (module / ".terraform" / "providers").mkdir(parents=True)
    (module / ".terraform" / "providers" / "x").write_text("binary")
    (module / "terraform.tfstate").write_text("{}")
    (module / "terraform.tfstate.backup").write_text("{}")
    (module / "main.tf").touch()
    again = pack(read_folder(module), source=LOCAL)
    assert again.module_hash == first.module_hash
    (module / "extra.tf").write_text("# one more file\n")
    assert pack(read_folder(module), source=LOCAL).module_hash != first.module_hash


async def test_a_request_pinned_to_the_old_definition_runs_the_old_module_content(
    db: Database, catalog: Path, tmp_path: Path
) -> None:
    view, result = await publish(db, catalog)
    assert result.status == "updated"
    await learn(db)
    old_hash = view.hashes[ITEM]
    old_module = view.modules[ITEM][LOCAL]
    main_tf = catalog / LOCAL / "main.tf"
    original = main_tf.read_text()

    # The module changes on disk, with a new version of the item, and the catalog republishes.
    main_tf.write_text(original + "\n# revision two\n")
    item = catalog / ITEM_FILE
    item.write_text(item.read_text().replace("version: 2.0.0", "version: 2.1.0", 1))
    view, result = await publish(db, catalog)
    assert result.updated == [ITEM]
    await learn(db)
    new_hash = view.hashes[ITEM]
    new_module = view.modules[ITEM][LOCAL]
    assert new_hash != old_hash
    assert new_module != old_module
    stored = await db.pool.fetchval(
        "SELECT count(*) FROM terraform_modules WHERE module_hash = ANY($1::text[])",
        [old_module, new_module],
    )
    assert stored == 2

    terraform = executor(db, catalog, tmp_path / "work")
    spec = {"module": LOCAL}
    old_dir = await terraform.module_dir(spec, old_hash)
    new_dir = await terraform.module_dir(spec, new_hash)
    assert old_dir == tmp_path / "work" / "modules" / old_module.removeprefix("sha256:")
    assert (old_dir / "main.tf").read_text() == original  # not what the catalog holds now
    assert (new_dir / "main.tf").read_text() == original + "\n# revision two\n"
    assert await terraform.module_dir(spec, old_hash) == old_dir  # unpacked once
    leftovers = [p.name for p in old_dir.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


async def test_new_module_content_under_the_same_item_version_is_refused(
    db: Database, catalog: Path, tmp_path: Path
) -> None:
    view, _ = await publish(db, catalog)
    await learn(db)
    item_hash, old_module = view.hashes[ITEM], view.modules[ITEM][LOCAL]
    (catalog / LOCAL / "README.md").write_text("How the parameter module works.\n")

    view, result = await publish(db, catalog)

    assert result.status == "failed"
    assert [p.rule for p in result.problems] == ["module-version"]
    assert LOCAL in result.problems[0].message
    assert result.problems[0].pointer == "/metadata/version"
    assert view.modules[ITEM][LOCAL] == old_module  # the served catalog is unchanged
    folder = await executor(db, catalog, tmp_path / "work").module_dir({"module": LOCAL}, item_hash)
    assert not (folder / "README.md").exists()  # requests pinned to it run what was published


@needs_terraform
async def test_a_git_module_at_a_tag_is_fetched_snapshotted_and_run(
    db: Database, catalog: Path, module_repo: ModuleRepo, tmp_path: Path
) -> None:
    source = module_repo.source("?ref=v1.0.0")
    use_module(catalog, source)
    only_the_item(catalog)
    snapshots = ModuleSnapshots(tmp_path / "module-git")

    view, result = await publish(db, catalog, snapshots)

    assert result.status == "updated", result.problems
    module_hash = view.modules[ITEM][source]
    assert (await item_events(db.store, ITEM))[-1].modules == {source: module_hash}
    row = await db.pool.fetchrow(
        "SELECT source, revision, files FROM terraform_modules WHERE module_hash = $1",
        module_hash,
    )
    assert (row["source"], row["revision"]) == (source, module_repo.tagged)  # the tag's commit
    assert row["files"] == 2  # main.tf and VERSION
    # The same commit named by its id is the same snapshot.
    by_commit = await snapshots.git(module_repo.source(f"?ref={module_repo.tagged}"))
    assert by_commit.module_hash == module_hash

    await learn(db)
    terraform = executor(db, catalog, tmp_path / "work")
    folder = await terraform.module_dir({"module": source}, view.hashes[ITEM])
    assert (folder / "VERSION").read_text() == "1.0.0\n"  # the tag, not main's 2.0.0-dev
    runner = terraform.runner
    workspace = f"res-{uuid4().hex[:8]}-{ACTION}"
    plan = await runner.plan(
        folder, {"name": "/orders/dev/flags", "type": "String"}, workspace=workspace
    )
    applied = await runner.apply_plan(
        folder, plan.plan_file, workspace=workspace, outputs=("parameter_name",)
    )
    assert applied.outputs["parameter_name"] == "/orders/dev/flags"

    _, again = await publish(db, catalog, snapshots)  # the tag resolves to the same commit
    assert again.status == "unchanged"


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("?ref=main", "'main' is a branch"),
        ("", "names no ref"),
        ("?ref=v9.9.9", "has no tag 'v9.9.9'"),
        ("?ref=1a2b3c4", "full 40-character id"),
        ("?ref=v1.0.0&depth=1", "unsupported source parameter(s): depth"),
    ],
)
async def test_a_git_module_without_a_tag_or_commit_is_refused_by_name(
    db: Database,
    catalog: Path,
    module_repo: ModuleRepo,
    tmp_path: Path,
    query: str,
    why: str,
) -> None:
    source = module_repo.source(query)
    use_module(catalog, source)

    view, result = await publish(db, catalog, ModuleSnapshots(tmp_path / "module-git"))

    assert result.status == "failed"
    assert len(result.problems) == 1
    problem = result.problems[0]
    assert problem.rule == "module"
    assert (problem.file, problem.pointer) == (ITEM_FILE, "/fulfillment/actions/0/terraform/module")
    assert problem.line is not None
    assert problem.message.startswith(f"item {ITEM}, action {ACTION}: module {source}: ")
    assert why in problem.message
    assert view.items == {}  # nothing was published
    events = await db.store.read_stream("catalog")
    assert [e.event_type for e in events] == ["CatalogRefreshFailed"]
    assert events[0].data["problems"][0]["message"] == problem.message
    assert await db.pool.fetchval("SELECT count(*) FROM terraform_modules") == 0


async def test_a_missing_local_module_folder_is_a_catalog_problem(
    db: Database, catalog: Path
) -> None:
    shutil.rmtree(catalog / LOCAL)
    _, result = await publish(db, catalog)
    assert result.status == "failed"
    assert [p.message for p in result.problems] == [
        f"item {ITEM}, action {ACTION}: module {LOCAL}: the catalog has no folder {LOCAL}"
    ]


async def test_a_corrupted_snapshot_is_refused(db: Database, catalog: Path, tmp_path: Path) -> None:
    view, _ = await publish(db, catalog)
    await learn(db)
    module_hash = view.modules[ITEM][LOCAL]
    tampered = await db.pool.fetchval(
        "SELECT archive FROM terraform_modules WHERE module_hash = $1", module_hash
    )
    tampered = tampered.replace(b"terraform_data", b"terraform_date", 1)
    await db.pool.execute(
        "UPDATE terraform_modules SET archive = $2 WHERE module_hash = $1", module_hash, tampered
    )
    terraform = executor(db, catalog, tmp_path / "work")

    with pytest.raises(ActionError) as refused:
        await terraform.module_dir({"module": LOCAL}, view.hashes[ITEM])

    assert refused.value.transient is False
    assert f"module {LOCAL}: the stored module snapshot {module_hash} is corrupt" in str(
        refused.value
    )
    assert not (tmp_path / "work" / "modules").exists() or not any(
        (tmp_path / "work" / "modules").iterdir()
    )


async def test_a_definition_published_before_snapshots_runs_the_catalog_folder(
    db: Database, catalog: Path, tmp_path: Path
) -> None:
    item = {"metadata": {"id": "old", "version": "1.0.0"}, "fulfillment": {"actions": []}}
    v2 = {"item_id": "old", "version": "1.0.0", "path": "x/old.yaml", "item": item}
    v2["item_hash"] = ev.item_hash(item)
    envelope = EventEnvelope(
        event_id=uuid4(),
        event_type="CatalogItemPublished",
        schema_version=2,
        stream_id="catalog",
        stream_version=1,
        global_position=1,
        occurred_at=datetime.now(UTC),
        data=v2,
    )
    event = ev.decode(envelope)
    assert isinstance(event, ev.CatalogItemPublished)
    assert event.modules == {}  # version 2 knew no snapshots
    async with db.pool.acquire() as conn:
        await on_item_published(Delivery(event, envelope, conn))
    terraform = executor(db, catalog, tmp_path / "work")

    assert await terraform.module_dir({"module": LOCAL}, event.item_hash) == catalog / LOCAL
    with pytest.raises(ActionError, match="has no snapshot") as refused:
        await terraform.module_dir({"module": "git::https://example.com/m.git?ref=v1"}, "sha256:0")
    assert refused.value.transient is False


async def test_a_git_catalog_snapshots_its_modules_at_the_commit_it_read(
    db: Database, catalog: Path, tmp_path: Path
) -> None:
    work = tmp_path / "catalog-work"
    bare = tmp_path / "catalog.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    git("config", "user.email", "platform@example.com", cwd=work)
    git("config", "user.name", "Platform", cwd=work)
    shutil.copytree(catalog, work / "catalog")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "the catalog", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    revision = git("rev-parse", "HEAD", cwd=work).strip()
    source = GitSource(
        f"file://{bare}", ref="main", subpath="catalog", cache_dir=tmp_path / "catalog-cache"
    )
    view = CatalogView()

    result = await refresh_catalog(source=source, store=db.store, view=view)

    assert result.status == "updated", result.problems
    module_hash = view.modules[ITEM][LOCAL]
    row = await db.pool.fetchrow(
        "SELECT source, revision FROM terraform_modules WHERE module_hash = $1", module_hash
    )
    assert (row["source"], row["revision"]) == (LOCAL, revision)
    # the same files as the folder on disk: the same snapshot
    assert module_hash == pack(read_folder(catalog / LOCAL), source=LOCAL).module_hash
