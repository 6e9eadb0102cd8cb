"""Why a schema cannot be honoured: shared by the generator and its helpers."""

from __future__ import annotations


class UnsupportedSchemaError(ValueError):
    """A schema llmsim cannot honour (or that is over a limit); ``keyword`` names the reason."""

    def __init__(self, keyword: str, detail: str = "") -> None:
        super().__init__(detail or f"JSON schema keyword '{keyword}' is not supported by llmsim")
        self.keyword = keyword
