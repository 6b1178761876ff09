"""The model directory: model.txt (LightGBM's text format) and model-card.json, written
atomically and read back with the same checks the Rust engine makes.

Score = the card's calibration applied to LightGBM's raw probability: piecewise-linear over
(x, y), clipped at the ends (numpy.interp). Decline iff score >= threshold.
"""

import hashlib
import json
import os
import shutil

import numpy as np

from .contract import (
    CARD_FILE,
    FEATURE_NAMES,
    FEATURES_VERSION,
    MODEL_FILE,
    NUM_THREADS,
    ModelError,
)


def canonical_json(value):
    """Sorted keys, no spaces, ASCII, floats as Python's shortest round-trip repr."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def model_version(model_bytes, calibration, threshold):
    """'m-' + the first 16 hex digits of sha256(model.txt bytes + canonical JSON of
    {calibration, threshold}): the same model with another calibration or threshold is
    another release."""
    digest = hashlib.sha256(model_bytes)
    digest.update(canonical_json({"calibration": calibration,
                                  "threshold": threshold}).encode("ascii"))
    return "m-" + digest.hexdigest()[:16]


def calibrate(raw, calibration):
    """The calibrated score of LightGBM raw probabilities."""
    return np.interp(np.asarray(raw, dtype=np.float64),
                     np.asarray(calibration["x"], dtype=np.float64),
                     np.asarray(calibration["y"], dtype=np.float64))


def card_json(card):
    return (json.dumps(card, indent=2, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def write_model_dir(out, model_bytes, card):
    """Writes `out` holding exactly model.txt and model-card.json, or nothing: both files go
    into a hidden folder beside it, are synced, and the folder is renamed to `out` (a rename
    replaces nothing but an empty folder; a model is a release, never overwritten)."""
    out = os.path.abspath(out)
    parent, name = os.path.split(out)
    check_out(out)
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        write_file(os.path.join(tmp, MODEL_FILE), model_bytes)
        write_file(os.path.join(tmp, CARD_FILE), card_json(card))
        sync_dir(tmp)
        try:
            os.rename(tmp, out)
        except OSError as e:
            raise ModelError(f"cannot write the model to {out}: {e.strerror}")
        sync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_out(out):
    """Fails before any work when `out` exists and is not an empty folder."""
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ModelError(f"cannot write the model to {out}: {parent} is not a folder")
    if os.path.exists(out) and not (os.path.isdir(out) and not os.listdir(out)):
        raise ModelError(f"{out} already exists: a model directory is never overwritten "
                         f"(choose a new --out)")


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def sync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_model_dir(path):
    """(booster, card) of a model directory, refused as the engine refuses it: a missing or
    unreadable card, another features_version or feature list, a model.txt whose sha256 is
    not the card's, or one LightGBM cannot parse."""
    import lightgbm as lgb

    card_path = os.path.join(path, CARD_FILE)
    try:
        with open(card_path, "rb") as f:
            card = json.loads(f.read())
    except FileNotFoundError:
        raise ModelError(f"{path}: no {CARD_FILE}: a model without its card is refused")
    except (OSError, ValueError) as e:
        raise ModelError(f"{card_path}: unreadable card: {e}")
    if card.get("features_version") != FEATURES_VERSION:
        raise ModelError(f"{card_path}: features_version {card.get('features_version')!r}, "
                         f"this package serves {FEATURES_VERSION!r}")
    if list(card.get("feature_names") or []) != list(FEATURE_NAMES):
        raise ModelError(f"{card_path}: feature_names differ from {FEATURES_VERSION}'s")
    model_path = os.path.join(path, card.get("model_file", MODEL_FILE))
    try:
        with open(model_path, "rb") as f:
            model_bytes = f.read()
    except OSError as e:
        raise ModelError(f"{model_path}: {e.strerror}")
    sha = hashlib.sha256(model_bytes).hexdigest()
    if sha != card.get("model_sha256"):
        raise ModelError(f"{model_path}: sha256 {sha} is not the card's {card.get('model_sha256')}")
    try:
        booster = lgb.Booster(model_str=model_bytes.decode("utf-8"))
    except (lgb.basic.LightGBMError, UnicodeDecodeError) as e:
        raise ModelError(f"{model_path}: LightGBM cannot parse it: {str(e).strip()}")
    return booster, card


def score(booster, card, matrix):
    """Calibrated scores of a (rows, features) matrix, as the engine computes them."""
    if len(matrix) == 0:
        return np.zeros(0)
    return calibrate(booster.predict(matrix, num_threads=NUM_THREADS), card["calibration"])
