"""Evidence chains: signed, hash-chained, rotated NDJSON chunks that survive crashes (DESIGN §4).

Writer: `writer.ChunkWriter`. Verification: `chain.verify_chain` / `chain.verify_chain_files`.
Reading: `reader.iter_chain_records`. Retention: `prune.prune_chain`.
"""
