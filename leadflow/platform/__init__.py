"""What every domain stands on: settings, the store, the clock, logs, the runtime, Temporal's data
converter, thread lanes and the error base."""
