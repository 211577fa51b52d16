from leadflow.platform.store.db import Database

__all__ = ["Database"]
