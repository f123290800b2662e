"""`stella keys`: generate signing keys and print fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ..attest.keys import KEY_TYPES, KeyFingerprint, generate_key, load_public_key
from ..errors import InputError
from ..formats.written import KeyGenerated
from ..report.kinds import FINGERPRINT, KEY_GENERATED
from ..report.registry import OutputFormat
from .output import emit, format_option

# Its help is its line in cli/app.py's GROUPS table.
app = typer.Typer(no_args_is_help=True)


def _passphrase(env_name: str | None, prompt: bool) -> bytes | None:
    if env_name:
        value = os.environ.get(env_name)
        if not value:
            raise InputError(f"environment variable ${env_name} is empty or not set")
        return value.encode()
    if prompt:
        value = typer.prompt("Passphrase", hide_input=True, confirmation_prompt=True)
        return str(value).encode()
    return None


@app.command("generate")
def generate(
    key_type: str = typer.Option("ed25519", "--type", help=f"One of: {', '.join(KEY_TYPES)}."),
    out: Path = typer.Option(..., "--out", help="Prefix: writes PREFIX.key and PREFIX.pub.json."),
    passphrase_env: str | None = typer.Option(
        None,
        "--passphrase-env",
        help="Encrypt the private key with the passphrase in this env var (default: none, the key is "
        "written unencrypted unless --prompt-passphrase).",
    ),
    prompt_passphrase: bool = typer.Option(
        False, "--prompt-passphrase", help="Ask for a passphrase to encrypt the private key."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing key files."),
    output_format: OutputFormat = format_option(KEY_GENERATED),
) -> None:
    """Create a key pair: PKCS#8 PEM private key (mode 0600) and a public key JSON."""
    if key_type not in KEY_TYPES:
        raise InputError(f"unknown key type {key_type!r}; expected one of {', '.join(KEY_TYPES)}")
    passphrase = _passphrase(passphrase_env, prompt_passphrase)
    generated = generate_key(key_type, out, passphrase, overwrite=force)  # type: ignore[arg-type]
    public = KeyFingerprint.of(generated.public_key)
    written = KeyGenerated(
        private_key=str(generated.private_path),
        public_key=str(generated.public_path),
        keyid=public.keyid,
        keytype=public.keytype,
        scheme=public.scheme,
        fingerprint_sha256=public.fingerprint_sha256,
        encrypted=passphrase is not None,
    )
    emit(written, output_format, KEY_GENERATED)


@app.command("fingerprint")
def show_fingerprint(
    key: Path = typer.Argument(..., help="A .pub.json, PEM public key or PEM private key."),
    output_format: OutputFormat = format_option(FINGERPRINT),
) -> None:
    """Print what an auditor compares by eye: keyid, type and SHA-256 fingerprint."""
    emit(KeyFingerprint.of(load_public_key(key)), output_format, FINGERPRINT)
