"""Reviewers: who labels the hard rows (see `base.Reviewer`)."""

from .base import Reviewer, ReviewItem, ReviewResult
from .file import FileReviewer
from .gold import GoldReviewer

__all__ = ["Reviewer", "ReviewItem", "ReviewResult", "FileReviewer", "GoldReviewer"]
