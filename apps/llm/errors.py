"""The exceptions of the LLM layer. Callers catch `LLMError`; `LLMUnavailable` means "answer offline"."""

from __future__ import annotations


class LLMError(RuntimeError):
    """Base of every error this app raises on purpose."""


class ToolSuspended(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a caller's `run_tool` to stop the function-calling loop at once: the tool now waits for the
    user (a BASIC HEAR), so the conversation belongs to that dialog. `chat()` lets it through."""


class LLMUnavailable(LLMError):
    """No provider can answer now: none configured, every breaker open, or every provider failed.

    The chat core gives its offline answer (KB passages with sources). The message is fit for users and
    bot authors; `reasons` holds one line per provider tried or skipped, for logs and operators: it names
    endpoints (which may be internal addresses), never a key or a prompt.
    """

    def __init__(self, message: str, reasons: tuple[str, ...] = ()) -> None:
        self.reasons = reasons
        super().__init__(message)

    @property
    def detail(self) -> str:
        """The message with every reason: for logs, not for users."""
        return "; ".join((str(self), *self.reasons))


class LLMTimeout(LLMUnavailable):
    """The whole call took longer than its time budget (the `LLM` keyword: 45 s)."""


class LLMStreamInterrupted(LLMError):
    """A provider broke off after part of the answer had already gone to `on_delta`.

    Not retried and not handed to another provider (the user has seen the beginning of this answer);
    `partial_text` is what was streamed, so the caller can keep it with a note.
    """

    def __init__(self, message: str, partial_text: str) -> None:
        self.partial_text = partial_text
        super().__init__(message)


class LLMQuotaExceeded(LLMError):
    """The tenant has used its daily token allowance (LLM_TENANT_DAILY_TOKENS); resets at 00:00 UTC."""

    def __init__(self, tenant: str, used: int, limit: int) -> None:
        self.tenant, self.used, self.limit = tenant, used, limit
        super().__init__(
            f"the daily LLM token quota of this tenant is used up ({used} of {limit} tokens); "
            "it resets at 00:00 UTC"
        )
