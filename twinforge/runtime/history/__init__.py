"""Telemetry and property history: time series of values per twin and field.

SQLite under the data dir by default, PostgreSQL when ``TWINFORGE_HISTORY_URL`` names one;
:class:`BatchingWriter` batches many small writes from many threads into few transactions.
"""

from twinforge.runtime.history.batching import BatchingWriter, BufferFullError
from twinforge.runtime.history.point import HistoryPoint
from twinforge.runtime.history.store import HistoryStore, open_history_store

__all__ = [
    "BatchingWriter",
    "BufferFullError",
    "HistoryPoint",
    "HistoryStore",
    "open_history_store",
]
