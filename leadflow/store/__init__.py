from leadflow.store.db import Database

__all__ = ["Database"]
