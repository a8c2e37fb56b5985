"""Access to a conformance case set: $KDTALKER_REFERENCE/<folder> (default tests/fixtures/reference)."""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from fixture_weights import fixture_state_dict

DEFAULT_ROOT = Path(__file__).parent / "fixtures" / "reference"


def reference_root() -> Path:
    """The folder named by $KDTALKER_REFERENCE, else the copy shipped with the tests."""
    return Path(os.environ.get("KDTALKER_REFERENCE", DEFAULT_ROOT))


class ReferenceSet:
    """One folder of a case set: its manifest, its cases and the fixture weights built from its specs."""

    def __init__(self, folder: str):
        self.path = reference_root() / folder
        if not self.path.is_dir():
            raise FileNotFoundError(f"reference folder {self.path} is missing (set KDTALKER_REFERENCE)")

    @cached_property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())

    @cached_property
    def cases(self) -> np.lib.npyio.NpzFile:
        return np.load(self.path / self.manifest.get("cases_file", "cases.npz"), allow_pickle=False)

    @property
    def salt(self) -> str:
        return str(self.manifest["salt"])

    def spec(self, filename: str) -> dict:
        return json.loads((self.path / filename).read_text())

    def weights(self, spec_filename: str, salt: str | None = None) -> dict[str, torch.Tensor]:
        """Fixture state dict of a spec file, keyed as in the official checkpoint."""
        return fixture_state_dict(self.spec(spec_filename), self.salt if salt is None else salt)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cases[name]
