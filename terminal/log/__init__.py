"""The append-only punch log: the store, its hash chain and checkpoints, the schema, the write lock, photo
evidence and the push client's bookkeeping (sync state).
"""
