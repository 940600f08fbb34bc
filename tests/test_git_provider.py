"""The Git source provider against real local repositories made with the git CLI."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.providers.git import GitProvider
from conveyor.model import ActionContext, GitSourceInput
from conveyor.settings import Settings
from conveyor.stores.artifacts import LocalArtifactStore

CONTEXT = ActionContext(pipeline_name="shop", execution_id="exec-1", stage_name="Source", action_name="Checkout")
IDENTITY = ["-c", "user.name=Ada Lovelace", "-c", "user.email=ada@example.com"]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *IDENTITY, *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "app.git"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("v1\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "First version")
    (path / "README.md").write_text("v2\n")
    (path / "src").mkdir()
    (path / "src" / "app.py").write_text("print('hi')\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "Second version\n\nWith a body.")
    return path


@pytest.fixture
def provider(tmp_path: Path) -> GitProvider:
    settings = Settings(data_dir=tmp_path / "data")
    return GitProvider(settings, LocalArtifactStore(settings.artifacts_dir))


async def test_fetches_the_branch_head_with_source_variables(repo: Path, provider: GitProvider) -> None:
    result = await ActivityEnvironment().run(
        provider.git_source, GitSourceInput(context=CONTEXT, repository=str(repo), output_artifact="SourceOutput")
    )
    head = git(repo, "rev-parse", "HEAD")
    variables = result.output_variables
    assert variables["CommitId"] == head
    assert variables["BranchName"] == "main"
    assert variables["CommitMessage"] == "Second version\n\nWith a body."
    assert variables["AuthorName"] == "Ada Lovelace" and variables["AuthorEmail"] == "ada@example.com"
    assert variables["AuthorDate"][:4].isdigit() and "T" in variables["CommitterDate"]
    assert variables["RepositoryName"] == "app"
    assert variables["FullRepositoryName"] == str(repo)
    assert result.summary == "Second version"
    assert result.source_revision is not None
    assert (result.source_revision.action_name, result.source_revision.revision_id) == ("Checkout", head)
    assert result.source_revision.revision_summary == "Second version"

    (artifact,) = result.output_artifacts
    with zipfile.ZipFile(provider.store.path_for(artifact.digest)) as zf:  # type: ignore[attr-defined]
        assert zf.namelist() == ["README.md", "src/app.py"]  # the work tree, no .git
    assert list(provider.settings.workspaces_dir.iterdir()) == []


async def test_commit_override_checks_out_an_older_commit(tmp_path: Path, repo: Path, provider: GitProvider) -> None:
    first = git(repo, "rev-list", "--max-parents=0", "HEAD")
    result = await ActivityEnvironment().run(
        provider.git_source,
        GitSourceInput(context=CONTEXT, repository=str(repo), commit=first, output_artifact="SourceOutput"),
    )
    assert result.output_variables["CommitId"] == first
    assert result.output_variables["BranchName"] == "main"
    out = tmp_path / "out"
    provider.store.extract(result.output_artifacts[0], out)
    assert (out / "README.md").read_text() == "v1\n"
    assert not (out / "src").exists()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"branch": "no-such-branch"}, "no-such-branch"),
        ({"commit": "0123456789abcdef0123456789abcdef01234567"}, "0123456789abcdef"),
        ({"repository": "/nonexistent/repo.git"}, "/nonexistent/repo.git"),
    ],
)
async def test_missing_branch_commit_or_repository_is_source_not_found(
    repo: Path, provider: GitProvider, fields: dict[str, str], expected: str
) -> None:
    source = GitSourceInput.model_validate({"context": CONTEXT, "repository": str(repo), **fields})
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(provider.git_source, source)
    assert caught.value.type == "SourceNotFound" and caught.value.non_retryable
    assert expected in caught.value.message
    assert list(provider.settings.workspaces_dir.iterdir()) == []
