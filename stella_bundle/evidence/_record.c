/* The canonical line of a plain observation record, checked and written in one pass (issue 4).
 *
 * `Encoder(fields, probe_types, kinds, max_int).encode(record)` returns the RFC 8785 bytes of
 * `record` when it is plainly valid in the toolkit's own forms, else None, and the Python path
 * (evidence/encoding.py: its fast path, then formats.record.validate_record) decides and names
 * the error. It accepts a strict subset of what validate_record accepts: an exact dict whose
 * keys are all known fields (the required ones present) and whose values are exact str/int of
 * the field's class; timestamps only as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (a real calendar date);
 * digests as `sha256:` + 64 lowercase hex; no `details` (the Python fast path takes those);
 * strings without surrogates. The field list, the classes, the probe types and kinds and the
 * integer bound come from Python (formats/record.py), so they are stated once.
 *
 * Output is the reference's: keys sorted (every field name is ASCII, so code point order is
 * byte order), no insignificant space, UTF-8, and JCS's string escapes (\" \\ \b \t \n \f \r,
 * other controls as \u00xx in lower case). tests/evidence/test_evidence_encoding.py compares
 * it with the reference on generated records.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#ifndef STELLA_RECORD_SOURCE_SHA256
#define STELLA_RECORD_SOURCE_SHA256 "unknown"
#endif

/* Field classes: the numbers evidence/encoding.py passes (its _STRING ... _IMAGE). */
enum { C_STRING, C_TIME, C_INT, C_NODE_HASH, C_PROBE, C_KIND, C_DETAILS, C_IMAGE };

#define MAX_FIELDS 32

typedef struct {
    PyObject_HEAD
    PyObject *index;                 /* field name -> position in sorted order */
    Py_ssize_t count;
    int klass[MAX_FIELDS];
    int required[MAX_FIELDS];
    long long minimum[MAX_FIELDS];   /* ints: least value; strings: least length */
    char prefix[MAX_FIELDS][40];     /* `,"name":` */
    Py_ssize_t prefix_len[MAX_FIELDS];
    PyObject *probe_types;
    PyObject *kinds;
    long long max_int;
    /* The keys of the previous record by dict position, and their fields: consecutive records
     * share their key objects, so a pointer comparison replaces the lookup. Held (a strong
     * reference), so that a freed key's address cannot come back as another string. */
    PyObject *last_key[MAX_FIELDS];
    Py_ssize_t last_slot[MAX_FIELDS];
} Encoder;

static void
Encoder_dealloc(Encoder *self)
{
    for (int i = 0; i < MAX_FIELDS; i++)
        Py_CLEAR(self->last_key[i]);
    Py_XDECREF(self->index);
    Py_XDECREF(self->probe_types);
    Py_XDECREF(self->kinds);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Encoder_init(Encoder *self, PyObject *args, PyObject *kwds)
{
    PyObject *fields, *probe_types, *kinds;
    long long max_int;
    if (!PyArg_ParseTuple(args, "O!O!O!L", &PyTuple_Type, &fields, &PyFrozenSet_Type,
                          &probe_types, &PyFrozenSet_Type, &kinds, &max_int))
        return -1;
    Py_ssize_t count = PyTuple_GET_SIZE(fields);
    if (count > MAX_FIELDS) {
        PyErr_SetString(PyExc_ValueError, "too many fields");
        return -1;
    }
    PyObject *index = PyDict_New();
    if (index == NULL)
        return -1;
    const char *previous = "";
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name;
        int klass, required;
        long long minimum;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(fields, i), "UipL", &name, &klass, &required,
                              &minimum))
            goto fail;
        Py_ssize_t length;
        const char *text = PyUnicode_AsUTF8AndSize(name, &length);
        if (text == NULL)
            goto fail;
        /* Sorted and ASCII: then the order given is the canonical order of the keys. */
        if (!PyUnicode_IS_ASCII(name) || length > 34 || (i && strcmp(previous, text) >= 0)) {
            PyErr_SetString(PyExc_ValueError, "fields must be short ASCII names, sorted");
            goto fail;
        }
        previous = text;
        PyObject *position = PyLong_FromSsize_t(i);
        if (position == NULL || PyDict_SetItem(index, name, position) < 0) {
            Py_XDECREF(position);
            goto fail;
        }
        Py_DECREF(position);
        self->klass[i] = klass;
        self->required[i] = required;
        self->minimum[i] = minimum;
        self->prefix_len[i] = snprintf(self->prefix[i], sizeof self->prefix[i], ",\"%s\":", text);
    }
    Py_XSETREF(self->index, index);
    self->count = count;
    for (int i = 0; i < MAX_FIELDS; i++)
        Py_CLEAR(self->last_key[i]);
    Py_INCREF(probe_types);
    Py_XSETREF(self->probe_types, probe_types);
    Py_INCREF(kinds);
    Py_XSETREF(self->kinds, kinds);
    self->max_int = max_int;
    return 0;
fail:
    Py_DECREF(index);
    return -1;
}

/* --- checks ------------------------------------------------------------------------------- */

static int
is_digits(const unsigned char *text, int count)
{
    for (int i = 0; i < count; i++)
        if (text[i] < '0' || text[i] > '9')
            return 0;
    return 1;
}

static int
number(const unsigned char *text, int count)
{
    int value = 0;
    for (int i = 0; i < count; i++)
        value = value * 10 + (text[i] - '0');
    return value;
}

/* `YYYY-MM-DDTHH:MM:SS.ffffffZ` naming a real moment (year 1-9999, no leap second): the
 * calendar Python's datetime accepts, which is what timeutil.is_rfc3339_timestamp asks. */
static int
timestamp_ok(PyObject *value)
{
    if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_ASCII(value) ||
        PyUnicode_GET_LENGTH(value) != 27)
        return 0;
    const unsigned char *t = PyUnicode_1BYTE_DATA(value);
    if (t[4] != '-' || t[7] != '-' || t[10] != 'T' || t[13] != ':' || t[16] != ':' ||
        t[19] != '.' || t[26] != 'Z')
        return 0;
    if (!is_digits(t, 4) || !is_digits(t + 5, 2) || !is_digits(t + 8, 2) ||
        !is_digits(t + 11, 2) || !is_digits(t + 14, 2) || !is_digits(t + 17, 2) ||
        !is_digits(t + 20, 6))
        return 0;
    int year = number(t, 4), month = number(t + 5, 2), day = number(t + 8, 2);
    if (year < 1 || month < 1 || month > 12 || day < 1)
        return 0;
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > days[month - 1] + (month == 2 && leap))
        return 0;
    return number(t + 11, 2) < 24 && number(t + 14, 2) < 60 && number(t + 17, 2) < 60;
}

/* `sha256:` followed by 64 lowercase hex digits (digests.PREFIXED_SHA256_RE). */
static int
digest_ok(PyObject *value)
{
    if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_ASCII(value) ||
        PyUnicode_GET_LENGTH(value) != 71)
        return 0;
    const unsigned char *t = PyUnicode_1BYTE_DATA(value);
    if (memcmp(t, "sha256:", 7) != 0)
        return 0;
    for (int i = 7; i < 71; i++)
        if (!((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f')))
            return 0;
    return 1;
}

/* --- output -------------------------------------------------------------------------------- */

typedef struct {
    char *data;
    Py_ssize_t used;
    Py_ssize_t size;
    char local[4096];
} Buffer;

static int
reserve(Buffer *out, Py_ssize_t more)
{
    if (out->used + more <= out->size)
        return 0;
    Py_ssize_t size = (out->used + more) * 2;
    char *data;
    if (out->data == out->local) {
        data = PyMem_Malloc(size);
        if (data != NULL)
            memcpy(data, out->local, out->used);
    } else {
        data = PyMem_Realloc(out->data, size);
    }
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    out->data = data;
    out->size = size;
    return 0;
}

/* 0: literal; else the character of its two-character escape, or 'u' for \u00xx. */
static const char ESCAPE[128] = {
    [0 ... 31] = 'u', ['\b'] = 'b', ['\t'] = 't', ['\n'] = 'n', ['\f'] = 'f', ['\r'] = 'r',
    ['"'] = '"', ['\\'] = '\\',
};

static char *
put_escaped(char *p, Py_UCS4 c)
{
    static const char hex[] = "0123456789abcdef";
    *p++ = '\\';
    if (ESCAPE[c] == 'u') {
        memcpy(p, "u00", 3);
        p[3] = hex[c >> 4];
        p[4] = hex[c & 15];
        return p + 5;
    }
    *p++ = ESCAPE[c];
    return p;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Whether any of eight ASCII bytes is a control, '"' or '\\' (zero-byte tests; ASCII bytes
 * have their high bit clear, so no borrow crosses from one byte into the next). */
static inline int
needs_escape(uint64_t w)
{
    uint64_t control = (w - ONES * 0x20) & ~w;
    uint64_t quote = w ^ (ONES * '"');
    uint64_t backslash = w ^ (ONES * '\\');
    return ((control | ((quote - ONES) & ~quote) | ((backslash - ONES) & ~backslash)) & HIGHS) != 0;
}

/* The string as a JSON string; -1 with an error set (memory), 1 for a surrogate (None). */
static int
put_string(Buffer *out, PyObject *value)
{
    Py_ssize_t length = PyUnicode_GET_LENGTH(value);
    /* Each code point takes at most 6 bytes (\u00xx; UTF-8 needs at most 4). */
    if (reserve(out, 6 * length + 2) < 0)
        return -1;
    char *p = out->data + out->used;
    *p++ = '"';
    int kind = PyUnicode_KIND(value);
    const void *data = PyUnicode_DATA(value);
    if (PyUnicode_IS_ASCII(value)) {
        const unsigned char *t = data;
        Py_ssize_t i = 0;
        /* Eight characters at a time while none needs an escape (most strings entirely). */
        for (; i + 8 <= length; i += 8) {
            uint64_t w;
            memcpy(&w, t + i, 8);
            if (needs_escape(w))
                break;
            memcpy(p, &w, 8);
            p += 8;
        }
        for (; i < length; i++) {
            unsigned char c = t[i];
            if (ESCAPE[c])
                p = put_escaped(p, c);
            else
                *p++ = (char)c;
        }
    } else {
        for (Py_ssize_t i = 0; i < length; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (c < 0x80) {
                if (ESCAPE[c])
                    p = put_escaped(p, c);
                else
                    *p++ = (char)c;
            } else if (c < 0x800) {
                *p++ = (char)(0xC0 | (c >> 6));
                *p++ = (char)(0x80 | (c & 0x3F));
            } else if (c < 0x10000) {
                if (c >= 0xD800 && c <= 0xDFFF)
                    return 1; /* not UTF-8: the reference path reports it */
                *p++ = (char)(0xE0 | (c >> 12));
                *p++ = (char)(0x80 | ((c >> 6) & 0x3F));
                *p++ = (char)(0x80 | (c & 0x3F));
            } else {
                *p++ = (char)(0xF0 | (c >> 18));
                *p++ = (char)(0x80 | ((c >> 12) & 0x3F));
                *p++ = (char)(0x80 | ((c >> 6) & 0x3F));
                *p++ = (char)(0x80 | (c & 0x3F));
            }
        }
    }
    *p++ = '"';
    out->used = p - out->data;
    return 0;
}

static void
put_integer(Buffer *out, long long value)
{
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    char *p = out->data + out->used;
    while (n)
        *p++ = digits[--n];
    out->used = p - out->data;
}

/* --- encode -------------------------------------------------------------------------------- */

static PyObject *
Encoder_encode(Encoder *self, PyObject *record)
{
    if (!PyDict_CheckExact(record) || self->index == NULL ||
        PyDict_GET_SIZE(record) > self->count)
        Py_RETURN_NONE;
    PyObject *values[MAX_FIELDS] = {NULL};
    Py_ssize_t position = 0;
    PyObject *key, *value;
    /* No Python code runs below (exact str keys, exact types): the borrowed references hold. */
    for (Py_ssize_t n = 0; PyDict_Next(record, &position, &key, &value); n++) {
        if (key == self->last_key[n]) {
            values[self->last_slot[n]] = value;
            continue;
        }
        if (!PyUnicode_CheckExact(key))
            Py_RETURN_NONE;
        PyObject *slot = PyDict_GetItemWithError(self->index, key);
        if (slot == NULL) {
            if (PyErr_Occurred())
                return NULL;
            Py_RETURN_NONE; /* an unknown field: the reference names it */
        }
        Py_ssize_t field = PyLong_AsSsize_t(slot);
        values[field] = value;
        Py_INCREF(key);
        Py_XSETREF(self->last_key[n], key);
        self->last_slot[n] = field;
    }
    Buffer out;
    out.data = out.local;
    out.used = 0;
    out.size = sizeof out.local;
    PyObject *result = NULL;
    int first = 1;
    for (Py_ssize_t i = 0; i < self->count; i++) {
        value = values[i];
        if (value == NULL) {
            if (self->required[i])
                goto none;
            continue;
        }
        int klass = self->klass[i];
        long long number_value = 0;
        switch (klass) {
        case C_STRING:
            if (!PyUnicode_CheckExact(value) || PyUnicode_GET_LENGTH(value) < self->minimum[i])
                goto none;
            break;
        case C_TIME:
            if (!timestamp_ok(value))
                goto none;
            break;
        case C_INT: {
            if (!PyLong_CheckExact(value))
                goto none;
            int overflow;
            number_value = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (overflow || number_value < self->minimum[i] || number_value > self->max_int)
                goto none;
            break;
        }
        case C_NODE_HASH:
        case C_IMAGE:
            if (!digest_ok(value))
                goto none;
            break;
        case C_PROBE:
        case C_KIND: {
            if (!PyUnicode_CheckExact(value))
                goto none;
            int found = PySet_Contains(klass == C_PROBE ? self->probe_types : self->kinds, value);
            if (found < 0)
                goto error;
            if (!found)
                goto none;
            break;
        }
        default: /* details, or a class this module does not know: the Python path */
            goto none;
        }
        Py_ssize_t skip = first; /* no comma before the first key */
        first = 0;
        if (reserve(&out, self->prefix_len[i] + 2 + 24) < 0)
            goto error;
        if (skip && out.used == 0)
            out.data[out.used++] = '{';
        memcpy(out.data + out.used, self->prefix[i] + skip, self->prefix_len[i] - skip);
        out.used += self->prefix_len[i] - skip;
        if (klass == C_INT) {
            put_integer(&out, number_value);
        } else {
            int status = put_string(&out, value);
            if (status < 0)
                goto error;
            if (status > 0)
                goto none;
        }
    }
    if (first || reserve(&out, 1) < 0)
        goto none_or_error;
    out.data[out.used++] = '}';
    result = PyBytes_FromStringAndSize(out.data, out.used);
    goto done;
none_or_error:
    if (PyErr_Occurred())
        goto done;
none:
    result = Py_NewRef(Py_None);
    goto done;
error:
    result = NULL;
done:
    if (out.data != out.local)
        PyMem_Free(out.data);
    return result;
}

static PyMethodDef Encoder_methods[] = {
    {"encode", (PyCFunction)Encoder_encode, METH_O,
     "The canonical line of a plainly valid record, else None (the Python path decides)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stella_bundle.evidence._record.Encoder",
    .tp_basicsize = sizeof(Encoder),
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Checks and writes plain observation records (see the module source).",
    .tp_methods = Encoder_methods,
    .tp_init = (initproc)Encoder_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef record_module = {
    PyModuleDef_HEAD_INIT, "_record", "The compiled record encoder (evidence/encoding.py).", -1,
    NULL,
};

PyMODINIT_FUNC
PyInit__record(void)
{
    if (PyType_Ready(&EncoderType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&record_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Encoder", (PyObject *)&EncoderType) < 0 ||
        PyModule_AddStringConstant(module, "SOURCE_SHA256", STELLA_RECORD_SOURCE_SHA256) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
