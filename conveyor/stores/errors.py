"""The errors of the artifact stores and their archive format; each message names the artifact."""

from __future__ import annotations


class ArtifactError(ValueError):
    """An artifact cannot be built, found or read; the message names the artifact."""


class UnsafeArchiveError(ArtifactError):
    """An archive entry would write outside the extraction directory."""


class DigestMismatchError(ArtifactError):
    """The archive's bytes do not have the digest it was asked to have."""
