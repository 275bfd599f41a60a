"""Where the experiments, their profiles and the k6 scripts are.

An installed wheel carries them inside the package (`chaosmessaging/bundled/experiments`, `k6`,
`platforms`, put there by the build from the repository's top-level `experiments/`, `k6/` and
`platforms/`); a source checkout or an editable install reads those top-level folders.
`chaosmessaging init DIR` copies them into a user's repository to adapt.
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["BUNDLES", "bundled", "copy_bundles", "copy_platform_template"]

BUNDLES = ("experiments", "k6")
# shipped like the bundles, but `init` copies a platform file only when asked (`--platform`)
_SHIPPED = (*BUNDLES, "platforms")
_PACKAGE = Path(__file__).resolve().parent


def bundled(name: str) -> Path:
    """The folder of bundle `name` ("experiments", "k6" or "platforms") this installation ships."""
    if name not in _SHIPPED:
        raise ValueError(f"unknown bundle {name!r}: one of {', '.join(_SHIPPED)}")
    for candidate in (_PACKAGE / "bundled" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"this installation of chaosmessaging ships no {name}/ folder "
        f"(looked in {_PACKAGE / 'bundled'} and {_PACKAGE.parent}); "
        "reinstall it from a wheel or a source checkout"
    )


def copy_bundles(target: str | Path, force: bool = False) -> list[Path]:
    """Copy every bundle into `target` (created if needed) and return the files written.

    Existing files are never overwritten unless `force`: a `FileExistsError` lists them first,
    so nothing is half-copied."""
    target = Path(target).expanduser().resolve()
    plan = []
    for name in BUNDLES:
        source = bundled(name)
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                plan.append((path, target / name / path.relative_to(source)))
    clashes = [dst for _, dst in plan if dst.exists()]
    if clashes and not force:
        raise FileExistsError(
            f"{len(clashes)} file(s) already exist in {target}, e.g. {clashes[0]}; "
            "pass --force to overwrite them"
        )
    for src, dst in plan:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    return [dst for _, dst in plan]


def copy_platform_template(target: str | Path, force: bool = False) -> Path:
    """Copy the commented platform file template to `target`/platform.yaml (never over an
    existing file unless `force`) and return its path."""
    dst = Path(target).expanduser().resolve() / "platform.yaml"
    if dst.exists() and not force:
        raise FileExistsError(f"{dst} already exists; pass --force to overwrite it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(bundled("platforms") / "template.yaml", dst)
    return dst
