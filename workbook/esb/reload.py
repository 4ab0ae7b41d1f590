"""Reload routing rules from their YAML file while the router runs, keeping the last good rules on errors.

`ReloadingRouter` reads the rules file before each routing call and compares its content with the
content it loaded last. When the content changed, it validates the new rules and swaps them into its
`Router`. When the new file is invalid or unreadable, it keeps routing by the last good rules, logs the
problem once for that content, and exposes it as `last_reload_error`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable
from pathlib import Path

import yaml

from workbook.esb.errors import RoutingRuleError, RuleProblem
from workbook.esb.routing import RoutableMessage, Router, RoutingDecision, RoutingStatistics
from workbook.esb.rules import RoutingRules
from workbook.esb.ubl import CanonicalMessage

logger = logging.getLogger(__name__)

FILE_PROBLEM_PATH = "<file>"


class RulesFile:
    """A routing rules file whose content is compared by SHA-256 digest, not by modification time.

    A modification time can stay the same across two quick writes, so the content is what counts.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RulesFile({str(self.path)!r})"

    def read(self) -> tuple[bytes, str]:
        """Return the file's bytes and their digest. Raises RoutingRuleError when it cannot be read."""
        try:
            content = self.path.read_bytes()
        except OSError as error:
            problem = RuleProblem(FILE_PROBLEM_PATH, f"cannot read the rules file: {error.strerror or error}")
            raise RoutingRuleError([problem], str(self.path)) from error
        return content, hashlib.sha256(content).hexdigest()

    def parse(self, content: bytes) -> RoutingRules:
        """Validate `content` as rules of this file. Raises RoutingRuleError listing every problem."""
        try:
            data = yaml.safe_load(content.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            problem = RuleProblem(FILE_PROBLEM_PATH, f"invalid YAML: {error}")
            raise RoutingRuleError([problem], str(self.path)) from error
        return RoutingRules.from_dict(data, source=str(self.path))


class ReloadingRouter:
    """A Router whose rules follow a YAML file: checked before each routing call, reloaded on change.

    The file must be valid when the router is created (there are no last good rules yet). Thread-safe.
    """

    def __init__(self, path: Path | str) -> None:
        self.file = RulesFile(path)
        content, digest = self.file.read()
        self.router = Router(self.file.parse(content))
        self._loaded_digest = digest
        self._seen_digest = digest
        self._lock = threading.Lock()
        self.reloads = 0
        self.failed_reloads = 0
        self.last_reload_error: RoutingRuleError | None = None

    @property
    def rules(self) -> RoutingRules:
        """The rules in use: the last ones that loaded without a problem."""
        return self.router.rules

    def refresh(self) -> bool:
        """Reload the rules if the file's content changed. Return whether new rules are now in use.

        On an invalid or unreadable file the last good rules stay in use and the error is stored in
        `last_reload_error`. It is logged once per file content, not once per message. A file put back
        to the content of the rules in use clears the error without a reload.
        """
        with self._lock:
            try:
                content, digest = self.file.read()
            except RoutingRuleError as error:
                self._record_unreadable(error)
                return False
            if digest == self._seen_digest:
                return False

            self._seen_digest = digest
            if digest == self._loaded_digest:
                self.last_reload_error = None
                return False
            return self._reload(content, digest)

    def route(self, message: RoutableMessage | CanonicalMessage) -> RoutingDecision:
        """Check the rules file, then route one message."""
        self.refresh()
        return self.router.route(message)

    def route_all(self, messages: Iterable[RoutableMessage | CanonicalMessage]) -> list[RoutingDecision]:
        """Check the rules file once, then route every message by the same rules."""
        self.refresh()
        return self.router.route_all(messages)

    def statistics(self) -> RoutingStatistics:
        return self.router.statistics()

    def _reload(self, content: bytes, digest: str) -> bool:
        try:
            rules = self.file.parse(content)
        except RoutingRuleError as error:
            self._record_failure(error)
            return False

        self.router.reload(rules)
        self._loaded_digest = digest
        self.reloads += 1
        self.last_reload_error = None
        return True

    def _record_unreadable(self, error: RoutingRuleError) -> None:
        # Forget the content seen, so the file is parsed again once it can be read.
        already_unreadable = self._seen_digest is None
        self._seen_digest = None
        if already_unreadable:
            self.last_reload_error = error
            return
        self._record_failure(error)

    def _record_failure(self, error: RoutingRuleError) -> None:
        self.last_reload_error = error
        self.failed_reloads += 1
        logger.error(
            "routing rules in %s not reloaded; still routing by the last good rules: %s",
            self.file.path,
            error,
        )
