"""Coverage: the verification engine. Observations (files, chains, a store's rows) aggregated per
node (`scan`, with its fast decoders `fastdecode` and `patterns`), then judged against a function
map (`engine`): the time window, per-path and per-tag rates, probe-type confidence, diagnoses of
missing symbols. `functionmap/` generates maps; this folder says how well observations cover one.

Entry point: `verify_files` (NDJSON files) or `verify_observations` (any records), both giving a
`VerificationResult`."""

from .engine import VerificationResult, VerifyOptions, verify_files, verify_observations

__all__ = ["VerificationResult", "VerifyOptions", "verify_files", "verify_observations"]
