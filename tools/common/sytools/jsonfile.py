"""Reading a JSON input file and checking the shape of what it holds. Every failure is an
InputError whose message starts with the file's path and says what is wrong in one line."""
import json
import math


class InputError(Exception):
    pass


def _no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def read(path):
    """The parsed document; InputError when the file cannot be read, is not UTF-8, not JSON,
    holds NaN or Infinity, or nests too deeply for the parser."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise InputError(f"{path}: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.start} is 0x{data[err.start]:02x})") \
            from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not JSON: {err.msg} at line {err.lineno} column {err.colno}") \
            from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply") from None
    except ValueError as err:  # NaN / Infinity, or an integer with too many digits
        what = str(err).splitlines()[0] if str(err) else "a value"
        if "digits" in what:
            what = "an integer has more digits than Python converts"
        raise InputError(f"{path}: not valid JSON: {what}") from None


class Checker:
    """Field checks that raise error("<path>: <where>: <what>") (no path: "<where>: <what>")."""

    def __init__(self, path, error=InputError):
        self.path = path
        self.error = error

    def fail(self, where, what):
        message = f"{where}: {what}" if where else what
        raise self.error(f"{self.path}: {message}" if self.path else message)

    def obj(self, value, where):
        if not isinstance(value, dict):
            self.fail(where, f"must be a JSON object, not {type_name(value)}")
        return value

    def field(self, obj, key, where):
        if key not in obj:
            self.fail(where, f"missing field '{key}'")
        return obj[key]

    def list(self, value, where, min_len=0, max_len=None):
        if not isinstance(value, list):
            self.fail(where, f"must be a list, not {type_name(value)}")
        if len(value) < min_len:
            self.fail(where, f"needs at least {min_len} entr{'y' if min_len == 1 else 'ies'}")
        if max_len is not None and len(value) > max_len:
            self.fail(where, f"has {len(value)} entries, at most {max_len} allowed")
        return value

    def int(self, value, where, lo=None, hi=None):
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"must be an integer, not {type_name(value)}")
        self._range(value, where, lo, hi)
        return value

    def number(self, value, where, lo=None, hi=None):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"must be a number, not {type_name(value)}")
        if not math.isfinite(value):
            self.fail(where, "must be finite")
        self._range(value, where, lo, hi)
        return value

    def str(self, value, where):
        if not isinstance(value, str):
            self.fail(where, f"must be a string, not {type_name(value)}")
        return value

    def _range(self, value, where, lo, hi):
        if lo is not None and value < lo:
            self.fail(where, f"is {short(value)}, must be >= {lo}")
        if hi is not None and value > hi:
            self.fail(where, f"is {short(value)}, must be <= {hi}")


def type_name(value):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), "?")


def short(value, limit=40):
    try:
        text = repr(value)
    except ValueError:  # an integer with more digits than Python converts
        return "a very large integer"
    return text if len(text) <= limit else text[:limit] + "..."
