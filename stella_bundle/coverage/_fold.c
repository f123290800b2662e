/* The per-record fold of plain observation records in compiled code (issue 15).
 *
 * The Python loop `ObservationAggregator._plain_records` (coverage/scan.py) is the reference
 * and the fallback; this module does the same fold with the same result:
 *
 *     state = expected.get(record.node_hash) or <unexpected state, created from the record>
 *     state.count += 1
 *     if record.observed_at < state.first: state.first = record.observed_at
 *     if record.observed_at > state.last: state.last = record.observed_at
 *     state.probe_mask |= PROBE_BIT[record.probe_type]
 *
 * `fold` takes records msgspec decoded and checked: it reads the attributes of the structs
 * (PyObject_GetAttr with interned names) and decides nothing about them. `scan` (below) reads
 * the commonest canonical line from the bytes itself, a strict subset of the record rules like
 * patterns.py's shape patterns (tests check it against validate_record). What it saves is the interpreter's per-record work: the node is found in
 * an open-addressing table keyed by the bytes of its hash (a seeded 64-bit hash of the bytes,
 * then a full memcmp on a hit) instead of a dict lookup that hashes each record's new 71-character
 * string with SipHash, and the node's count and probe bits are C integers added to the Python
 * values only when read (`NodeState`), so no int object is made per record.
 *
 * The table is a cache of the aggregator's dicts: a miss asks Python (`resolve(record)`, which
 * looks the node up in the dicts or creates it, and raises what the Python loop raises), and the
 * state it returns is kept. The aggregator clears the table when its dicts changed size outside
 * this fold; states are never removed from the dicts nor replaced, only changed in place.
 * Strings that are not of the one-byte kind (no valid node hash is) are never cached: each such
 * record asks Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#ifndef STELLA_FOLD_SOURCE_SHA256
#define STELLA_FOLD_SOURCE_SHA256 ""
#endif

static PyObject *s_node_hash, *s_observed_at, *s_probe_type, *s_first_default, *s_last_default;

/* ---- NodeState: one node's state; count and probe_mask pending in C until read ---------- */

/* Copies of short one-byte strings kept inside the state, so that the fold compares a record's
 * time with the node's first and last, and its hash with the node's key, without reading three
 * other objects scattered in memory (the cache misses were most of the fold's time). */
#define TEXT_MAX 32
#define KEY_MAX 80

typedef struct {
    PyObject_HEAD
    int64_t count_add;    /* added to count when read */
    uint64_t mask_or;     /* or-ed into probe_mask when read */
    int8_t first_length;  /* of first_text; -1: first is not a short one-byte string */
    int8_t last_length;   /* (a short one is kept as text, its str made when read: the fold
                           * does not keep, and later release, a record's string per record) */
    uint8_t key_length;   /* of key, the node hash an Index keeps this state under; 0: none */
    Py_UCS1 first_text[TEXT_MAX];
    Py_UCS1 last_text[TEXT_MAX];
    PyObject *first;      /* NULL while first is only first_text */
    PyObject *last;       /* NULL while last is only last_text */
    Py_UCS1 key[KEY_MAX];
    PyObject *count;      /* int */
    PyObject *probe_mask; /* int */
    PyObject *function_name;
    PyObject *purl;
} NodeState;

/* The short copy of a string when it has one: its length, else -1. */
static inline int
short_text(PyObject *value, Py_UCS1 *text)
{
    if (!PyUnicode_CheckExact(value) || PyUnicode_KIND(value) != PyUnicode_1BYTE_KIND
        || PyUnicode_GET_LENGTH(value) > TEXT_MAX) {
        return -1;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(value);
    memcpy(text, PyUnicode_1BYTE_DATA(value), (size_t)length);
    return (int)length;
}

static PyTypeObject NodeStateType;

static PyObject *
NodeState_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "NodeState() takes no arguments");
        return NULL;
    }
    NodeState *self = (NodeState *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->count = PyLong_FromLong(0);
    self->probe_mask = PyLong_FromLong(0);
    if (self->count == NULL || self->probe_mask == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->first = Py_NewRef(s_first_default);
    self->last = Py_NewRef(s_last_default);
    self->first_length = (int8_t)short_text(self->first, self->first_text);
    self->last_length = (int8_t)short_text(self->last, self->last_text);
    if (self->first_length < 0 || self->last_length < 0) {
        Py_DECREF(self);
        PyErr_SetString(PyExc_SystemError, "NodeState: the defaults are short texts");
        return NULL;
    }
    self->function_name = Py_NewRef(Py_None);
    self->purl = Py_NewRef(Py_None);
    return (PyObject *)self;
}

static void
NodeState_dealloc(NodeState *self)
{
    Py_XDECREF(self->count);
    Py_XDECREF(self->probe_mask);
    Py_XDECREF(self->first);
    Py_XDECREF(self->last);
    Py_XDECREF(self->function_name);
    Py_XDECREF(self->purl);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
flush_count(NodeState *self)
{
    if (self->count_add == 0) {
        return 0;
    }
    PyObject *add = PyLong_FromLongLong(self->count_add);
    if (add == NULL) {
        return -1;
    }
    PyObject *sum = PyNumber_Add(self->count, add);
    Py_DECREF(add);
    if (sum == NULL) {
        return -1;
    }
    Py_SETREF(self->count, sum);
    self->count_add = 0;
    return 0;
}

static int
flush_mask(NodeState *self)
{
    if (self->mask_or == 0) {
        return 0;
    }
    PyObject *bits = PyLong_FromUnsignedLongLong(self->mask_or);
    if (bits == NULL) {
        return -1;
    }
    PyObject *mask = PyNumber_Or(self->probe_mask, bits);
    Py_DECREF(bits);
    if (mask == NULL) {
        return -1;
    }
    Py_SETREF(self->probe_mask, mask);
    self->mask_or = 0;
    return 0;
}

static PyObject *
NodeState_get_count(NodeState *self, void *closure)
{
    if (flush_count(self) < 0) {
        return NULL;
    }
    return Py_NewRef(self->count);
}

static int
NodeState_set_count(NodeState *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "count cannot be deleted");
        return -1;
    }
    Py_SETREF(self->count, Py_NewRef(value));
    self->count_add = 0;
    return 0;
}

static PyObject *
NodeState_get_mask(NodeState *self, void *closure)
{
    if (flush_mask(self) < 0) {
        return NULL;
    }
    return Py_NewRef(self->probe_mask);
}

static int
NodeState_set_mask(NodeState *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "probe_mask cannot be deleted");
        return -1;
    }
    Py_SETREF(self->probe_mask, Py_NewRef(value));
    self->mask_or = 0;
    return 0;
}

/* The str of a value kept as text (made once, when first read). */
static PyObject *
text_object(PyObject **object, const Py_UCS1 *text, int length)
{
    if (*object == NULL) {
        *object = PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, text, length);
    }
    return *object;
}

/* Set a first/last value: kept as text when short (the str it came in is not kept). */
static inline void
set_text(PyObject **object, Py_UCS1 *text, int8_t *length, PyObject *value)
{
    int n = short_text(value, text);
    *length = (int8_t)n;
    if (n >= 0) {
        Py_CLEAR(*object);
    }
    else {
        Py_XSETREF(*object, Py_NewRef(value));
    }
}

static PyObject *
NodeState_get_first(NodeState *self, void *closure)
{
    return Py_XNewRef(text_object(&self->first, self->first_text, self->first_length));
}

static int
NodeState_set_first(NodeState *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "first cannot be deleted");
        return -1;
    }
    Py_XSETREF(self->first, Py_NewRef(value));
    self->first_length = (int8_t)short_text(value, self->first_text);
    return 0;
}

static PyObject *
NodeState_get_last(NodeState *self, void *closure)
{
    return Py_XNewRef(text_object(&self->last, self->last_text, self->last_length));
}

static int
NodeState_set_last(NodeState *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "last cannot be deleted");
        return -1;
    }
    Py_XSETREF(self->last, Py_NewRef(value));
    self->last_length = (int8_t)short_text(value, self->last_text);
    return 0;
}

static PyGetSetDef NodeState_getset[] = {
    {"count", (getter)NodeState_get_count, (setter)NodeState_set_count, "records (or counts) folded", NULL},
    {"probe_mask", (getter)NodeState_get_mask, (setter)NodeState_set_mask, "probe type bits", NULL},
    {"first", (getter)NodeState_get_first, (setter)NodeState_set_first, "first seen (\"~\" when never)", NULL},
    {"last", (getter)NodeState_get_last, (setter)NodeState_set_last, "last seen (\"\" when never)", NULL},
    {NULL},
};

static PyMemberDef NodeState_members[] = {
    {"function_name", T_OBJECT_EX, offsetof(NodeState, function_name), 0, "name of an unexpected node"},
    {"purl", T_OBJECT_EX, offsetof(NodeState, purl), 0, "purl of an unexpected node"},
    {NULL},
};

static PyTypeObject NodeStateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stella_bundle.coverage._fold.NodeState",
    .tp_basicsize = sizeof(NodeState),
    .tp_dealloc = (destructor)NodeState_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "What was seen of one node_hash (coverage.scan.NodeAggregate's fields).",
    .tp_getset = NodeState_getset,
    .tp_members = NodeState_members,
    .tp_new = NodeState_new,
};

/* What `resolve()` returned (a new reference, or NULL with an error set) as a NodeState;
 * anything else is a TypeError and is released. */
static NodeState *
resolved_node(PyObject *found)
{
    if (found == NULL) {
        return NULL;
    }
    if (!PyObject_TypeCheck(found, &NodeStateType)) {
        PyErr_Format(PyExc_TypeError, "resolve() must return a NodeState, not %.100s",
                     Py_TYPE(found)->tp_name);
        Py_DECREF(found);
        return NULL;
    }
    return (NodeState *)found;
}

/* ---- Index: node hash bytes -> NodeState, open addressing ------------------------------- */

typedef struct {
    uint64_t hash;
    NodeState *node; /* NULL: empty slot; its key is node->key */
} Slot;

#define PROBE_CACHE 16
#define NAME_MAX_TEXT 24

/* A few short ASCII names as text (probe types with their bits, record kinds), so that the
 * scans compare a value's bytes with them. `complete`: every name of the Python collection it
 * was filled from is here, so a value not here is none of them (no need to ask Python). */
typedef struct {
    int count;
    int complete;
    uint8_t length[PROBE_CACHE];
    char text[PROBE_CACHE][NAME_MAX_TEXT];
    uint64_t bit[PROBE_CACHE];
} Texts;

static int
texts_add(Texts *texts, PyObject *name, uint64_t bit)
{
    Py_ssize_t length;
    const char *text = PyUnicode_Check(name) ? PyUnicode_AsUTF8AndSize(name, &length) : NULL;
    if (text == NULL) {
        PyErr_Clear();
        texts->complete = 0;
        return 0;
    }
    if (texts->count == PROBE_CACHE || length >= NAME_MAX_TEXT || !PyUnicode_IS_ASCII(name)) {
        texts->complete = 0;
        return 0;
    }
    texts->length[texts->count] = (uint8_t)length;
    memcpy(texts->text[texts->count], text, (size_t)length);
    texts->bit[texts->count] = bit;
    texts->count++;
    return 0;
}

/* Fill `texts` from a dict of name -> bit (probe types) or a tuple of names (bits 0); -1 on
 * error. Names that do not fit leave it incomplete. */
static int
texts_fill(Texts *texts, PyObject *names)
{
    texts->count = 0;
    texts->complete = 1;
    if (PyDict_Check(names)) {
        Py_ssize_t position = 0;
        PyObject *name, *value;
        while (PyDict_Next(names, &position, &name, &value)) {
            unsigned long long bit = PyLong_AsUnsignedLongLong(value);
            if (bit == (unsigned long long)-1 && PyErr_Occurred()) {
                return -1;
            }
            texts_add(texts, name, bit);
        }
        return 0;
    }
    if (!PyTuple_Check(names)) {
        PyErr_SetString(PyExc_TypeError, "names must be a dict or a tuple");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        texts_add(texts, PyTuple_GET_ITEM(names, i), 0);
    }
    return 0;
}

/* The place of the `length` bytes at `p` among the names, or -1. */
static inline int
texts_find(const Texts *texts, const char *p, Py_ssize_t length)
{
    for (int i = 0; i < texts->count; i++) {
        if (texts->length[i] == length && memcmp(texts->text[i], p, (size_t)length) == 0) {
            return i;
        }
    }
    return -1;
}

typedef struct {
    PyObject_HEAD
    Slot *slots;
    size_t capacity; /* a power of two */
    size_t used;
    uint64_t seed;
    PyObject *bits; /* dict: probe type -> bit */
    Texts kinds;    /* the record kinds the scan takes (none when not given) */
    int probes;
    PyObject *probe_name[PROBE_CACHE];
    uint64_t probe_bit[PROBE_CACHE];
} Index;

static inline uint64_t
mix(uint64_t h)
{
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 29;
    return h;
}

/* A seeded hash of the key's bytes: two independent lanes of 8-byte words. */
static inline uint64_t
hash_bytes(const Py_UCS1 *p, Py_ssize_t n, uint64_t seed)
{
    uint64_t a = seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ULL);
    uint64_t b = ~seed * 0xD6E8FEB86659FD93ULL;
    while (n >= 16) {
        uint64_t w1, w2;
        memcpy(&w1, p, 8);
        memcpy(&w2, p + 8, 8);
        a = (a ^ w1) * 0x9FB21C651E98DF25ULL;
        b = (b ^ w2) * 0xC2B2AE3D27D4EB4FULL;
        a ^= a >> 32;
        b ^= b >> 29;
        p += 16;
        n -= 16;
    }
    uint64_t w = 0;
    if (n >= 8) {
        memcpy(&w, p, 8);
        a = (a ^ w) * 0x9FB21C651E98DF25ULL;
        p += 8;
        n -= 8;
        w = 0;
    }
    memcpy(&w, p, (size_t)n);
    b = (b ^ w) * 0xC2B2AE3D27D4EB4FULL;
    return mix(a ^ mix(b));
}

static void
Index_release(Index *self)
{
    if (self->slots != NULL) {
        for (size_t i = 0; i < self->capacity; i++) {
            Py_XDECREF((PyObject *)self->slots[i].node);
        }
        memset(self->slots, 0, self->capacity * sizeof(Slot));
    }
    self->used = 0;
}

static int
Index_allocate(Index *self, size_t capacity)
{
    Slot *slots = PyMem_Calloc(capacity, sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->slots = slots;
    self->capacity = capacity;
    self->used = 0;
    return 0;
}

static PyObject *
Index_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"bits", "seed", "kinds", NULL};
    PyObject *bits, *kinds = NULL;
    unsigned long long seed;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!K|O!", keywords, &PyDict_Type, &bits, &seed,
                                     &PyTuple_Type, &kinds)) {
        return NULL;
    }
    Index *self = (Index *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->seed = (uint64_t)seed;
    self->bits = Py_NewRef(bits);
    if (kinds != NULL && texts_fill(&self->kinds, kinds) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    if (Index_allocate(self, 1024) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
Index_dealloc(Index *self)
{
    Index_release(self);
    PyMem_Free(self->slots);
    for (int i = 0; i < self->probes; i++) {
        Py_XDECREF(self->probe_name[i]);
    }
    Py_XDECREF(self->bits);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Index_grow(Index *self)
{
    Slot *old = self->slots;
    size_t old_capacity = self->capacity;
    if (Index_allocate(self, old_capacity * 2) < 0) {
        self->slots = old;
        self->capacity = old_capacity;
        return -1;
    }
    size_t mask = self->capacity - 1;
    for (size_t i = 0; i < old_capacity; i++) {
        if (old[i].node == NULL) {
            continue;
        }
        size_t j = (size_t)old[i].hash & mask;
        while (self->slots[j].node != NULL) {
            j = (j + 1) & mask;
        }
        self->slots[j] = old[i];
        self->used++;
    }
    PyMem_Free(old);
    return 0;
}

/* The bit of a probe type: a cache of the (interned, by msgspec) names seen, else the dict. */
static inline int
probe_bit(Index *self, PyObject *name, uint64_t *bit)
{
    for (int i = 0; i < self->probes; i++) {
        if (self->probe_name[i] == name) {
            *bit = self->probe_bit[i];
            return 0;
        }
    }
    PyObject *value = PyDict_GetItemWithError(self->bits, name);
    if (value == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetObject(PyExc_KeyError, name);
        }
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    if (self->probes < PROBE_CACHE) {
        self->probe_name[self->probes] = Py_NewRef(name);
        self->probe_bit[self->probes] = v;
        self->probes++;
    }
    *bit = v;
    return 0;
}

/* a < b (op Py_LT) or a > b (op Py_GT), as Python compares them; b_text/b_length: b's short
 * copy (b_length -1: none). Two one-byte strings compare as their bytes. */
static inline int
compare(PyObject *a, PyObject **b_object, const Py_UCS1 *b_text, int b_length, int op)
{
    if (b_length >= 0 && PyUnicode_CheckExact(a) && PyUnicode_KIND(a) == PyUnicode_1BYTE_KIND) {
        Py_ssize_t la = PyUnicode_GET_LENGTH(a), lb = b_length;
        int c = memcmp(PyUnicode_1BYTE_DATA(a), b_text, (size_t)(la < lb ? la : lb));
        if (c == 0) {
            c = (la > lb) - (la < lb);
        }
        return op == Py_LT ? c < 0 : c > 0;
    }
    PyObject *b = b_length >= 0 ? text_object(b_object, b_text, b_length) : *b_object;
    if (b == NULL) {
        return -1;
    }
    return PyObject_RichCompareBool(a, b, op);
}

/* The state of a record's node: from the table, else from resolve(record) (kept when the key
 * is cacheable). A new reference, or NULL with an exception. */
static inline int
cacheable_key(PyObject *key)
{
    return PyUnicode_CheckExact(key) && PyUnicode_KIND(key) == PyUnicode_1BYTE_KIND
           && PyUnicode_GET_LENGTH(key) > 0 && PyUnicode_GET_LENGTH(key) <= KEY_MAX;
}

static inline uint64_t
key_hash(Index *self, PyObject *key)
{
    return hash_bytes(PyUnicode_1BYTE_DATA(key), PyUnicode_GET_LENGTH(key), self->seed);
}

/* `hash`: key_hash of a cacheable key (ignored otherwise). */
static NodeState *
node_of(Index *self, PyObject *record, PyObject *key, uint64_t hash, PyObject *resolve)
{
    int cacheable = cacheable_key(key);
    size_t j = 0;
    if (cacheable) {
        const Py_UCS1 *data = PyUnicode_1BYTE_DATA(key);
        Py_ssize_t length = PyUnicode_GET_LENGTH(key);
        size_t mask = self->capacity - 1;
        j = (size_t)hash & mask;
        for (;;) {
            NodeState *node = self->slots[j].node;
            if (node == NULL) {
                break;
            }
            if (self->slots[j].hash == hash && node->key_length == length
                && memcmp(node->key, data, (size_t)length) == 0) {
                Py_INCREF(node);
                return node;
            }
            j = (j + 1) & mask;
        }
    }
    PyObject *found = PyObject_CallOneArg(resolve, record);
    NodeState *node = resolved_node(found);
    if (node == NULL) {
        return NULL;
    }
    const Py_UCS1 *data = NULL;
    Py_ssize_t length = 0;
    if (cacheable) {
        data = PyUnicode_1BYTE_DATA(key);
        length = PyUnicode_GET_LENGTH(key);
        /* A state is kept under one key: the hash it was first found by. */
        if (node->key_length == 0) {
            memcpy(node->key, data, (size_t)length);
            node->key_length = (uint8_t)length;
        }
        else if (node->key_length != length || memcmp(node->key, data, (size_t)length) != 0) {
            cacheable = 0;
        }
    }
    if (!cacheable) {
        return node;
    }
    /* resolve ran Python code: the table may have grown meanwhile, find the slot again. */
    if ((self->used + 1) * 4 > self->capacity * 3 && Index_grow(self) < 0) {
        Py_DECREF(found);
        return NULL;
    }
    size_t mask = self->capacity - 1;
    j = (size_t)hash & mask;
    while (self->slots[j].node != NULL) {
        NodeState *other = self->slots[j].node;
        if (self->slots[j].hash == hash && other->key_length == length
            && memcmp(other->key, data, (size_t)length) == 0) {
            return node; /* cached meanwhile */
        }
        j = (j + 1) & mask;
    }
    self->slots[j].hash = hash;
    self->slots[j].node = (NodeState *)Py_NewRef(found);
    self->used++;
    return node;
}

/* Reading a record's fields: through the data descriptors of its type (msgspec's struct fields
 * are member descriptors), found once per type along its MRO as attribute lookup finds them;
 * a data descriptor takes precedence over any instance attribute, so calling its tp_descr_get
 * is what `record.name` does. A type with its own tp_getattro, or a field that is not a data
 * descriptor, is read with PyObject_GetAttr. */
enum { F_OBSERVED, F_KEY, F_PROBE, FIELDS };

typedef struct {
    PyTypeObject *type; /* borrowed: the records of the list being folded keep it alive */
    PyObject *descr[FIELDS];
} Fields;

static PyObject **field_names[FIELDS] = {&s_observed_at, &s_node_hash, &s_probe_type};

static void
fields_release(Fields *fields)
{
    for (int k = 0; k < FIELDS; k++) {
        Py_CLEAR(fields->descr[k]);
    }
    fields->type = NULL;
}

static int
fields_of(Fields *fields, PyTypeObject *type)
{
    fields_release(fields);
    fields->type = type;
    if (type->tp_getattro != PyObject_GenericGetAttr || type->tp_mro == NULL) {
        return 0;
    }
    for (int k = 0; k < FIELDS; k++) {
        PyObject *found = NULL;
        for (Py_ssize_t b = 0; b < PyTuple_GET_SIZE(type->tp_mro) && found == NULL; b++) {
            PyObject *base = PyTuple_GET_ITEM(type->tp_mro, b);
            PyObject *dict = ((PyTypeObject *)base)->tp_dict;
            if (dict == NULL) {
                break;
            }
            found = PyDict_GetItemWithError(dict, *field_names[k]);
            if (found == NULL && PyErr_Occurred()) {
                return -1;
            }
        }
        if (found != NULL && Py_TYPE(found)->tp_descr_get != NULL
            && Py_TYPE(found)->tp_descr_set != NULL) {
            fields->descr[k] = Py_NewRef(found);
        }
    }
    return 0;
}

static inline PyObject *
field(Fields *fields, PyObject *record, int k)
{
    if (Py_TYPE(record) != fields->type && fields_of(fields, Py_TYPE(record)) < 0) {
        return NULL;
    }
    PyObject *descr = fields->descr[k];
    if (descr != NULL) {
        return Py_TYPE(descr)->tp_descr_get(descr, record, (PyObject *)fields->type);
    }
    return PyObject_GetAttr(record, *field_names[k]);
}

/* Records are read AHEAD places before they are folded: their time and hash fetched and the
 * hash's table slot prefetched, and the node of that slot two places before, so that the
 * memory reads of several records overlap (they were most of the fold's time). A field that
 * could not be read ahead is read again in its turn, which raises in record order. */
#define AHEAD 8
#define RING 8 /* a power of two, >= AHEAD */

typedef struct {
    PyObject *observed;
    PyObject *key;
    uint64_t hash;
    int hashed;
} Ahead;

static inline void
read_ahead(Index *self, Fields *fields, PyObject *record, Ahead *ahead)
{
    ahead->observed = field(fields, record, F_OBSERVED);
    if (ahead->observed == NULL) {
        PyErr_Clear();
    }
    ahead->key = field(fields, record, F_KEY);
    ahead->hashed = 0;
    if (ahead->key == NULL) {
        PyErr_Clear();
    }
    else if (cacheable_key(ahead->key)) {
        ahead->hash = key_hash(self, ahead->key);
        ahead->hashed = 1;
        __builtin_prefetch(&self->slots[(size_t)ahead->hash & (self->capacity - 1)]);
    }
}

static PyObject *
Index_fold(Index *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "fold(records, resolve) takes two arguments");
        return NULL;
    }
    PyObject *records = args[0], *resolve = args[1];
    if (!PyList_Check(records)) {
        PyErr_SetString(PyExc_TypeError, "fold() records must be a list");
        return NULL;
    }
    /* The records are held: resolve() runs Python code, which could change the list. */
    records = PySequence_List(records);
    if (records == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(records);
    PyObject **items = PySequence_Fast_ITEMS(records);
    Fields fields = {NULL, {NULL, NULL, NULL}};
    Ahead ring[RING];
    memset(ring, 0, sizeof(ring));
    for (Py_ssize_t i = 0; i < n && i < AHEAD; i++) {
        read_ahead(self, &fields, items[i], &ring[i & (RING - 1)]);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *record = items[i];
        Ahead *mine = &ring[i & (RING - 1)];
        PyObject *observed = mine->observed, *key = mine->key, *probe = NULL;
        uint64_t hash = mine->hash;
        int hashed = mine->hashed;
        mine->observed = mine->key = NULL;
        NodeState *node = NULL;
        uint64_t bit;
        int less, more;
        if (i + AHEAD < n) {
            read_ahead(self, &fields, items[i + AHEAD], &ring[(i + AHEAD) & (RING - 1)]);
        }
        if (i + 2 < n) {
            Ahead *soon = &ring[(i + 2) & (RING - 1)];
            if (soon->hashed) {
                NodeState *next = self->slots[(size_t)soon->hash & (self->capacity - 1)].node;
                if (next != NULL) {
                    __builtin_prefetch(next);
                    __builtin_prefetch((char *)next + 64);
                }
            }
        }
        if (observed == NULL && (observed = field(&fields, record, F_OBSERVED)) == NULL) {
            goto error;
        }
        if (key == NULL) {
            if ((key = field(&fields, record, F_KEY)) == NULL) {
                goto error;
            }
            hashed = cacheable_key(key);
            if (hashed) {
                hash = key_hash(self, key);
            }
        }
        node = node_of(self, record, key, hash, resolve);
        if (node == NULL) {
            goto error;
        }
        if (node->count_add == INT64_MAX && flush_count(node) < 0) {
            goto error;
        }
        node->count_add++;
        less = compare(observed, &node->first, node->first_text, node->first_length, Py_LT);
        if (less < 0) {
            goto error;
        }
        if (less) {
            set_text(&node->first, node->first_text, &node->first_length, observed);
        }
        more = compare(observed, &node->last, node->last_text, node->last_length, Py_GT);
        if (more < 0) {
            goto error;
        }
        if (more) {
            set_text(&node->last, node->last_text, &node->last_length, observed);
        }
        probe = field(&fields, record, F_PROBE);
        if (probe == NULL || probe_bit(self, probe, &bit) < 0) {
            goto error;
        }
        node->mask_or |= bit;
        Py_DECREF(probe);
        Py_DECREF((PyObject *)node);
        Py_DECREF(key);
        Py_DECREF(observed);
        continue;
    error:
        Py_XDECREF(probe);
        Py_XDECREF((PyObject *)node);
        Py_XDECREF(key);
        Py_XDECREF(observed);
        for (int k = 0; k < RING; k++) {
            Py_XDECREF(ring[k].observed);
            Py_XDECREF(ring[k].key);
        }
        fields_release(&fields);
        Py_DECREF(records);
        return NULL;
    }
    fields_release(&fields);
    Py_DECREF(records);
    Py_RETURN_NONE;
}

/* ---- scan: a block of canonical plain lines, folded from its bytes ---------------------- *
 *
 * The commonest collector line, {"function_name":"…","node_hash":"sha256:…","observed_at":"…",
 * "pid":…,"probe_type":"…"}, decoded by msgspec, became a struct and three strings per record
 * that `fold` then read once: most of a scan worker's time (issue 15). `scan` reads such lines
 * straight from the block's bytes and folds them as `fold` does, making no object per record
 * (a node's first record's hash, name and purl are made for `resolve`). It accepts a strict
 * subset of what formats.record.validate_record accepts, the grammar of
 * coverage.patterns.shape_pattern narrowed: keys sorted, each once, among PLAIN_KEYS (with
 * function_name, node_hash and observed_at); strings of printable ASCII without a quote or a
 * backslash; node_hash "sha256:" and 64 lowercase hex digits; observed_at a canonical UTC
 * timestamp of a real calendar date; pid 0 or 1-15 digits without a leading zero; probe_type a
 * key of `bits` ("unknown" when absent); kind one of the Index's `kinds`; no whitespace, no
 * blank line. Any other line and the block is not folded at all (None): the Python paths
 * decide it and name a bad line. Every line is checked before the first is folded.
 *
 * `parse_records` (below) reads an API verify body's JSON array of records by the same value
 * rules, with JSON whitespace and keys in any order. */

enum { V_STR, V_NAME, V_PURL, V_HASH, V_TIME, V_UINT, V_PROBE, V_KIND };

typedef struct {
    const char *name;
    Py_ssize_t length;
    int kind;
} PlainKey;

#define KEY(name, kind) {name, sizeof(name) - 1, kind}
static const PlainKey PLAIN_KEYS[] = {
    KEY("binary_path", V_STR),   KEY("build_id", V_STR),   KEY("comm", V_STR),
    KEY("container_id", V_STR),  KEY("function_name", V_NAME), KEY("host", V_STR),
    KEY("kind", V_KIND),         KEY("namespace", V_STR),  KEY("node_hash", V_HASH),
    KEY("observed_at", V_TIME),  KEY("pid", V_UINT),       KEY("pod_name", V_STR),
    KEY("probe_type", V_PROBE),  KEY("purl", V_PURL),
};
#undef KEY
#define PLAIN_KEY_COUNT ((int)(sizeof(PLAIN_KEYS) / sizeof(PLAIN_KEYS[0])))
#define HASH_LENGTH 71 /* "sha256:" and 64 hex digits */
#define TIME_LENGTH 27 /* YYYY-MM-DDTHH:MM:SS.ffffffZ */
/* The value kinds a record must have (one key each). */
#define REQUIRED_KINDS ((1u << V_NAME) | (1u << V_HASH) | (1u << V_TIME))

/* One checked line: where its values are in the block. */
typedef struct {
    Py_ssize_t key;   /* node_hash */
    Py_ssize_t time;  /* observed_at */
    Py_ssize_t name;  /* function_name */
    Py_ssize_t purl;  /* -1: absent */
    uint32_t name_length;
    uint32_t purl_length;
    uint64_t bit;
    uint64_t hash;
} PlainLine;

/* Byte classes: 0 a lowercase hex digit (NOT_HEX), a character of a simple string
 * (STRING_CLASS: 0 plain, 1 the closing quote, 2 not allowed), digits as '0'
 * (DIGITS_ZEROED), the keys of PLAIN_KEYS that begin with a byte (KEYS_FROM[c] to
 * KEYS_TO[c]: the table is sorted). Filled at module init. */
static unsigned char NOT_HEX[256];
static unsigned char STRING_CLASS[256];
static unsigned char KEYS_FROM[256], KEYS_TO[256];
static char DIGITS_ZEROED[256]; /* each byte itself, a digit '0' */

static void
byte_classes(void)
{
    for (int c = 0; c < 256; c++) {
        NOT_HEX[c] = !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
        STRING_CLASS[c] = c == '"' ? 1 : (c < 0x20 || c > 0x7e || c == '\\') ? 2 : 0;
        KEYS_FROM[c] = KEYS_TO[c] = 0;
        DIGITS_ZEROED[c] = (char)(c >= '0' && c <= '9' ? '0' : c);
    }
    for (int key = PLAIN_KEY_COUNT - 1; key >= 0; key--) {
        unsigned char c = (unsigned char)PLAIN_KEYS[key].name[0];
        if (KEYS_TO[c] == 0) {
            KEYS_TO[c] = (unsigned char)(key + 1);
        }
        KEYS_FROM[c] = (unsigned char)key;
    }
}

/* The end of a simple string's characters from just after its opening quote (at the closing
 * quote), or NULL. */
static inline const char *
simple_string(const char *p, const char *end)
{
    while (p < end) {
        unsigned char k = STRING_CLASS[(unsigned char)*p];
        if (k) {
            return k == 1 ? p : NULL;
        }
        p++;
    }
    return NULL;
}

static inline int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A canonical UTC timestamp of a real date (the rule of fastdecode and patterns.date_ok). */
static int
canonical_time(const char *t)
{
    /* Every digit made '0', the text must be the shape (no branch per character). */
    static const char shape[] = "0000-00-00T00:00:00.000000Z";
    char zeroed[TIME_LENGTH];
#pragma GCC unroll 27
    for (int i = 0; i < TIME_LENGTH; i++) {
        zeroed[i] = DIGITS_ZEROED[(unsigned char)t[i]];
    }
    if (memcmp(zeroed, shape, TIME_LENGTH) != 0) {
        return 0;
    }
    int year = (t[0] - '0') * 1000 + (t[1] - '0') * 100 + (t[2] - '0') * 10 + (t[3] - '0');
    int month = (t[5] - '0') * 10 + (t[6] - '0');
    int day = (t[8] - '0') * 10 + (t[9] - '0');
    int hour = (t[11] - '0') * 10 + (t[12] - '0');
    if (hour > 23 || t[14] > '5' || t[17] > '5' || year < 1 || month < 1 || month > 12 || day < 1) {
        return 0;
    }
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return day <= days[month - 1] + (month == 2 && leap);
}

/* The bit of a probe type spelled by `length` bytes at `p`: 1 found, 0 not a probe type, -1
 * error. Names seen are cached as text; a complete cache (every probe type in it) answers
 * alone, without Python. */
static int
probe_text_bit(PyObject *bits, Texts *cache, const char *p, Py_ssize_t length, uint64_t *bit)
{
    int i = texts_find(cache, p, length);
    if (i >= 0) {
        *bit = cache->bit[i];
        return 1;
    }
    if (cache->complete) {
        return 0;
    }
    PyObject *name = PyUnicode_DecodeASCII(p, length, NULL);
    if (name == NULL) {
        return -1;
    }
    PyObject *value = PyDict_GetItemWithError(bits, name);
    Py_DECREF(name);
    if (value == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    if (cache->count < PROBE_CACHE && length < NAME_MAX_TEXT) {
        cache->length[cache->count] = (uint8_t)length;
        memcpy(cache->text[cache->count], p, (size_t)length);
        cache->bit[cache->count] = v;
        cache->count++;
    }
    *bit = v;
    return 1;
}

/* What the scans know of the names: the probe types (`bits`, texts cached in `probes`) and
 * the record kinds. */
typedef struct {
    PyObject *bits;
    Texts *probes;
    const Texts *kinds;
} Names;

/* Check the value of a key of kind `kind` at `*at` (just after the colon), filling `line`: 1
 * with `*at` just past the value, 0 when it is not a plain value, -1 on error. */
static int
plain_value(const Names *names, int kind, const char *base, const char **at, const char *end,
            PlainLine *line)
{
    const char *p = *at;
    if (kind == V_UINT) {
        const char *start = p;
        while (p < end && is_digit(*p)) {
            p++;
        }
        if (p == start || p - start > 15 || (*start == '0' && p - start > 1)) {
            return 0;
        }
        *at = p;
        return 1;
    }
    if (p >= end || *p != '"') {
        return 0;
    }
    const char *start = p + 1, *close;
    /* A hash and a time have one length: their closing quote is looked for there, and their
     * characters are checked by their own rule below (no quote, backslash or control
     * character passes it); other strings are scanned for it. */
    Py_ssize_t fixed = kind == V_HASH ? HASH_LENGTH : kind == V_TIME ? TIME_LENGTH : -1;
    if (fixed >= 0) {
        if (end - start <= fixed || start[fixed] != '"') {
            return 0;
        }
        close = start + fixed;
    }
    else if ((close = simple_string(start, end)) == NULL) {
        return 0;
    }
    Py_ssize_t n = close - start;
    if (kind == V_NAME) {
        if (n == 0 || n > UINT32_MAX) {
            return 0;
        }
        line->name = start - base;
        line->name_length = (uint32_t)n;
    }
    else if (kind == V_HASH) {
        if (memcmp(start, "sha256:", 7) != 0) {
            return 0;
        }
        /* No branch per digit (digits and letters at random mispredicted half). */
        unsigned bad = 0;
#pragma GCC unroll 16
        for (int i = 7; i < HASH_LENGTH; i++) {
            bad |= NOT_HEX[(unsigned char)start[i]];
        }
        if (bad) {
            return 0;
        }
        line->key = start - base;
    }
    else if (kind == V_TIME) {
        if (!canonical_time(start)) {
            return 0;
        }
        line->time = start - base;
    }
    else if (kind == V_PROBE) {
        int found = probe_text_bit(names->bits, names->probes, start, n, &line->bit);
        if (found <= 0) {
            return found;
        }
    }
    else if (kind == V_KIND) {
        if (texts_find(names->kinds, start, n) < 0) {
            return 0;
        }
    }
    else if (kind == V_PURL) {
        if (n > UINT32_MAX) {
            return 0;
        }
        line->purl = start - base;
        line->purl_length = (uint32_t)n;
    }
    *at = close + 1;
    return 1;
}

/* A record's keys all read (`kinds`: the value kinds seen): 1 when it has the required ones
 * (its probe bit "unknown"'s when it had no probe_type), 0 when not, -1 on error. */
static int
plain_record_done(const Names *names, unsigned kinds, PlainLine *line)
{
    if ((kinds & REQUIRED_KINDS) != REQUIRED_KINDS) {
        return 0;
    }
    if (!(kinds & (1u << V_PROBE))) {
        return probe_text_bit(names->bits, names->probes, "unknown", 7, &line->bit);
    }
    return 1;
}

/* Check the line at `p`; 1 with `line` filled and `*next` past its newline (or at `end`), 0
 * when it is not a plain canonical line, -1 on error. */
static int
plain_line(const Names *names, const char *base, const char *p, const char *end,
           PlainLine *line, const char **next)
{
    if (p >= end || *p != '{') {
        return 0;
    }
    p++;
    int key = 0;
    unsigned kinds = 0;
    line->purl = -1;
    line->purl_length = 0;
    for (;;) {
        /* "key": */
        if (p >= end || *p != '"') {
            return 0;
        }
        const char *close = simple_string(p + 1, end);
        if (close == NULL) {
            return 0;
        }
        Py_ssize_t length = close - (p + 1);
        while (key < PLAIN_KEY_COUNT
               && !(PLAIN_KEYS[key].length == length
                    && memcmp(PLAIN_KEYS[key].name, p + 1, (size_t)length) == 0)) {
            key++; /* keys in order: a later one, or none */
        }
        if (key == PLAIN_KEY_COUNT || close + 1 >= end || close[1] != ':') {
            return 0;
        }
        p = close + 2;
        int kind = PLAIN_KEYS[key].kind;
        key++;
        int ok = plain_value(names, kind, base, &p, end, line);
        if (ok <= 0) {
            return ok;
        }
        kinds |= 1u << kind;
        if (p >= end) {
            return 0;
        }
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p != '}') {
            return 0;
        }
        p++;
        break;
    }
    int done = plain_record_done(names, kinds, line);
    if (done <= 0) {
        return done;
    }
    if (p < end) {
        if (*p != '\n') {
            return 0;
        }
        p++;
    }
    *next = p;
    return 1;
}

static inline int
compare_text(const Py_UCS1 *a, Py_ssize_t la, const Py_UCS1 *b, Py_ssize_t lb)
{
    int c = memcmp(a, b, (size_t)(la < lb ? la : lb));
    return c != 0 ? c : (la > lb) - (la < lb);
}

/* `observed` (a canonical time's text) against a node's first or last: < 0, 0, > 0, or -2 on
 * error. */
static int
compare_time(const Py_UCS1 *observed, PyObject **object, const Py_UCS1 *text, int length)
{
    if (length >= 0) {
        int c = compare_text(observed, TIME_LENGTH, text, length);
        return (c > 0) - (c < 0);
    }
    PyObject *value = PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, observed, TIME_LENGTH);
    if (value == NULL) {
        return -2;
    }
    int less = PyObject_RichCompareBool(value, *object, Py_LT);
    int more = less == 0 ? PyObject_RichCompareBool(value, *object, Py_GT) : 0;
    Py_DECREF(value);
    if (less < 0 || more < 0) {
        return -2;
    }
    return less ? -1 : more;
}

static inline void
set_time(PyObject **object, Py_UCS1 *text, int8_t *length, const Py_UCS1 *observed)
{
    memcpy(text, observed, TIME_LENGTH);
    *length = TIME_LENGTH;
    Py_CLEAR(*object);
}

/* The state of a checked line's node: from the table, else from resolve(node_hash,
 * function_name, purl) (kept in the table as node_of keeps it). A new reference or NULL. */
static NodeState *
node_of_line(Index *self, const char *base, const PlainLine *line, PyObject *resolve)
{
    const Py_UCS1 *data = (const Py_UCS1 *)base + line->key;
    size_t mask = self->capacity - 1;
    for (size_t j = (size_t)line->hash & mask;; j = (j + 1) & mask) {
        NodeState *node = self->slots[j].node;
        if (node == NULL) {
            break;
        }
        if (self->slots[j].hash == line->hash && node->key_length == HASH_LENGTH
            && memcmp(node->key, data, HASH_LENGTH) == 0) {
            Py_INCREF(node);
            return node;
        }
    }
    PyObject *key = PyUnicode_DecodeASCII((const char *)data, HASH_LENGTH, NULL);
    PyObject *name = PyUnicode_DecodeASCII(base + line->name, line->name_length, NULL);
    PyObject *purl = line->purl < 0 ? Py_NewRef(Py_None)
                                    : PyUnicode_DecodeASCII(base + line->purl, line->purl_length,
                                                            NULL);
    PyObject *found = NULL;
    if (key != NULL && name != NULL && purl != NULL) {
        PyObject *args[3] = {key, name, purl};
        found = PyObject_Vectorcall(resolve, args, 3, NULL);
    }
    Py_XDECREF(key);
    Py_XDECREF(name);
    Py_XDECREF(purl);
    NodeState *node = resolved_node(found);
    if (node == NULL) {
        return NULL;
    }
    if (node->key_length == 0) {
        memcpy(node->key, data, HASH_LENGTH);
        node->key_length = HASH_LENGTH;
    }
    else if (node->key_length != HASH_LENGTH || memcmp(node->key, data, HASH_LENGTH) != 0) {
        return node; /* kept under another key */
    }
    if ((self->used + 1) * 4 > self->capacity * 3 && Index_grow(self) < 0) {
        Py_DECREF(found);
        return NULL;
    }
    mask = self->capacity - 1;
    size_t j = (size_t)line->hash & mask;
    while (self->slots[j].node != NULL) {
        NodeState *other = self->slots[j].node;
        if (self->slots[j].hash == line->hash && other->key_length == HASH_LENGTH
            && memcmp(other->key, data, HASH_LENGTH) == 0) {
            return node; /* cached meanwhile */
        }
        j = (j + 1) & mask;
    }
    self->slots[j].hash = line->hash;
    self->slots[j].node = (NodeState *)Py_NewRef(found);
    self->used++;
    return node;
}

/* A window bound's text (a canonical time string) or none. */
typedef struct {
    int present;
    const Py_UCS1 *text;
    Py_ssize_t length;
} Bound;

static int
bound_of(PyObject *value, Bound *bound)
{
    bound->present = value != Py_None;
    if (!bound->present) {
        return 1;
    }
    if (!PyUnicode_CheckExact(value) || PyUnicode_KIND(value) != PyUnicode_1BYTE_KIND
        || !PyUnicode_IS_ASCII(value)) {
        return 0; /* not a canonical time: the Python fold compares it */
    }
    bound->text = PyUnicode_1BYTE_DATA(value);
    bound->length = PyUnicode_GET_LENGTH(value);
    return 1;
}

/* Fold `n` checked lines of `base` in order, as `fold` folds records (those outside the window
 * counted in `*outside`, not folded): 0, or -1 with an exception (lines before it folded). */
static int
fold_lines(Index *self, const char *base, PlainLine *lines, Py_ssize_t n, PyObject *resolve,
           const Bound *from, const Bound *to, Py_ssize_t *outside)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        lines[i].hash = hash_bytes((const Py_UCS1 *)base + lines[i].key, HASH_LENGTH, self->seed);
    }
    *outside = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const PlainLine *line = &lines[i];
        const Py_UCS1 *observed = (const Py_UCS1 *)base + line->time;
        if (i + AHEAD < n) {
            __builtin_prefetch(&self->slots[(size_t)lines[i + AHEAD].hash & (self->capacity - 1)]);
        }
        if (i + 2 < n) {
            NodeState *next = self->slots[(size_t)lines[i + 2].hash & (self->capacity - 1)].node;
            if (next != NULL) {
                __builtin_prefetch(next);
                __builtin_prefetch((char *)next + 64);
            }
        }
        if ((from->present && compare_text(observed, TIME_LENGTH, from->text, from->length) < 0)
            || (to->present && compare_text(observed, TIME_LENGTH, to->text, to->length) > 0)) {
            (*outside)++;
            continue;
        }
        NodeState *node = node_of_line(self, base, line, resolve);
        if (node == NULL) {
            return -1;
        }
        if (node->count_add == INT64_MAX && flush_count(node) < 0) {
            Py_DECREF(node);
            return -1;
        }
        node->count_add++;
        int less = compare_time(observed, &node->first, node->first_text, node->first_length);
        int more = less == -2 ? -2
                              : compare_time(observed, &node->last, node->last_text,
                                             node->last_length);
        if (more == -2) {
            Py_DECREF(node);
            return -1;
        }
        if (less == -1) {
            set_time(&node->first, node->first_text, &node->first_length, observed);
        }
        if (more == 1) {
            set_time(&node->last, node->last_text, &node->last_length, observed);
        }
        node->mask_or |= line->bit;
        Py_DECREF(node);
    }
    return 0;
}

static PyObject *
Index_scan(Index *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "scan(block: bytes, resolve, window_from, window_to) takes four arguments");
        return NULL;
    }
    PyObject *block = args[0], *resolve = args[1];
    Bound from, to;
    if (!bound_of(args[2], &from) || !bound_of(args[3], &to)) {
        Py_RETURN_NONE;
    }
    const char *base = PyBytes_AS_STRING(block);
    const char *end = base + PyBytes_GET_SIZE(block);
    /* A line is at least 100 bytes (its three required fields): the bound of the lines. */
    Py_ssize_t most = PyBytes_GET_SIZE(block) / 100 + 1;
    PlainLine *lines = PyMem_Malloc((size_t)most * sizeof(PlainLine));
    if (lines == NULL) {
        return PyErr_NoMemory();
    }
    Texts probes;
    probes.count = 0;
    probes.complete = 0;
    Names names = {self->bits, &probes, &self->kinds};
    Py_ssize_t n = 0, outside;
    const char *p = base;
    while (p < end) {
        if (n == most) {
            goto not_plain;
        }
        int ok = plain_line(&names, base, p, end, &lines[n], &p);
        if (ok < 0) {
            PyMem_Free(lines);
            return NULL;
        }
        if (ok == 0) {
            goto not_plain;
        }
        n++;
    }
    int failed = fold_lines(self, base, lines, n, resolve, &from, &to, &outside);
    PyMem_Free(lines);
    return failed ? NULL : Py_BuildValue("nn", n, outside);
not_plain:
    PyMem_Free(lines);
    Py_RETURN_NONE;
}

/* ---- parse_records: an API verify body's array of records ------------------------------- *
 *
 * A verify request's `observations` array, msgspec-decoded on the event loop, made a struct
 * and three strings per record and freed them after the answer: a third of a worker's GIL time
 * under the bench (docs/api.md, 2026-12-03). `parse_records` checks the array's bytes by the
 * rules of `scan` (the same value checks, `plain_value`) and keeps where each record's values
 * are (`Records`), making no object per record; `Index.fold_records` folds them as `scan` folds
 * its lines. The array as JSON writes it: whitespace between tokens, a record's keys in any
 * order, each once (msgspec takes a repeated key's last value: such an array is left to it),
 * among PLAIN_KEYS. Anything else is None: the typed decoder then decides, as before. The
 * bytes are read without the GIL (no Python object is touched) when the array is large and
 * its buffer read-only. */

typedef struct {
    PyObject_HEAD
    Py_buffer view;  /* the array's bytes, held (view.obj NULL: none) */
    PyObject *bits;  /* the probe bits the lines carry */
    Py_ssize_t count;
    PlainLine *lines;
} Records;

static void
Records_dealloc(Records *self)
{
    if (self->view.obj != NULL) {
        PyBuffer_Release(&self->view);
    }
    PyMem_RawFree(self->lines);
    Py_XDECREF(self->bits);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
Records_len(Records *self)
{
    return self->count;
}

static PySequenceMethods Records_as_sequence = {
    .sq_length = (lenfunc)Records_len,
};

static PyTypeObject RecordsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stella_bundle.coverage._fold.Records",
    .tp_basicsize = sizeof(Records),
    .tp_dealloc = (destructor)Records_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An array of plain records checked by parse_records, for Index.fold_records.",
    .tp_as_sequence = &Records_as_sequence,
};

/* JSON's whitespace (not \v or \f). */
static inline const char *
skip_space(const char *p, const char *end)
{
    while (p < end && (unsigned char)*p <= ' '
           && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) {
        p++;
    }
    return p;
}

/* The key of PLAIN_KEYS whose quoted name is at `p` (its opening quote), or -1. */
static inline int
plain_key_at(const char *p, const char *end)
{
    unsigned char c = (unsigned char)p[1];
    for (int key = KEYS_FROM[c]; key < KEYS_TO[c]; key++) {
        Py_ssize_t length = PLAIN_KEYS[key].length;
        if (end - p > length + 1 && p[length + 1] == '"'
            && memcmp(PLAIN_KEYS[key].name, p + 1, (size_t)length) == 0) {
            return key;
        }
    }
    return -1;
}

/* The record object at `p` (its '{'); 1 with `line` filled and `*next` just past its '}', 0
 * when it is not a plain record, -1 on error. */
static int
body_record(const Names *names, const char *base, const char *p, const char *end,
            PlainLine *line, const char **next)
{
    unsigned keys = 0, kinds = 0;
    line->purl = -1;
    line->purl_length = 0;
    p = skip_space(p + 1, end);
    for (;;) {
        if (p + 1 >= end || *p != '"') {
            return 0; /* {} too: it lacks the required keys */
        }
        int key = plain_key_at(p, end);
        if (key < 0 || (keys & (1u << key))) {
            return 0; /* another key, or one named again */
        }
        keys |= 1u << key;
        p = skip_space(p + PLAIN_KEYS[key].length + 2, end);
        if (p >= end || *p != ':') {
            return 0;
        }
        p = skip_space(p + 1, end);
        int kind = PLAIN_KEYS[key].kind;
        int ok = plain_value(names, kind, base, &p, end, line);
        if (ok <= 0) {
            return ok;
        }
        kinds |= 1u << kind;
        p = skip_space(p, end);
        if (p >= end) {
            return 0;
        }
        if (*p == ',') {
            p = skip_space(p + 1, end);
            continue;
        }
        if (*p != '}') {
            return 0;
        }
        break;
    }
    int done = plain_record_done(names, kinds, line);
    if (done > 0) {
        *next = p + 1;
    }
    return done;
}

/* The array from `base` to `end` (all of it, whitespace around it allowed): its number of
 * records with `lines` filled (at most `most`), 0 when it is not an array of plain records
 * (or holds none), -1 on error. */
static Py_ssize_t
body_array(const Names *names, const char *base, const char *end, PlainLine *lines,
           Py_ssize_t most)
{
    const char *p = skip_space(base, end);
    if (p >= end || *p != '[') {
        return 0;
    }
    p = skip_space(p + 1, end);
    Py_ssize_t n = 0;
    for (;;) {
        if (p >= end || *p != '{' || n == most) {
            return 0; /* [] too: the typed decoder answers an empty array */
        }
        int ok = body_record(names, base, p, end, &lines[n], &p);
        if (ok <= 0) {
            return ok;
        }
        n++;
        p = skip_space(p, end);
        if (p < end && *p == ',') {
            p = skip_space(p + 1, end);
            continue;
        }
        if (p >= end || *p != ']') {
            return 0;
        }
        return skip_space(p + 1, end) == end ? n : 0;
    }
}

/* Arrays at least this large are read without the GIL (a smaller one is read in less time
 * than a hand-off of the GIL can cost under load: up to the 5 ms switch interval). */
#define NOGIL_MIN_BYTES (1 << 20)

static PyObject *
parse_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyDict_Check(args[1]) || !PyTuple_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "parse_records(array, bits: dict, kinds: tuple) takes three arguments");
        return NULL;
    }
    Records *self = PyObject_New(Records, &RecordsType);
    if (self == NULL) {
        return NULL;
    }
    self->view.obj = NULL;
    self->bits = Py_NewRef(args[1]);
    self->count = 0;
    self->lines = NULL;
    if (PyObject_GetBuffer(args[0], &self->view, PyBUF_SIMPLE) < 0) {
        self->view.obj = NULL;
        Py_DECREF(self);
        return NULL;
    }
    Texts probes, kinds;
    if (texts_fill(&probes, args[1]) < 0 || texts_fill(&kinds, args[2]) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    Names names = {args[1], &probes, &kinds};
    const char *base = self->view.buf;
    Py_ssize_t size = self->view.len;
    /* A record is at least 100 bytes (its three required fields): the bound of the records. */
    Py_ssize_t most = size / 100 + 1;
    self->lines = PyMem_RawMalloc((size_t)most * sizeof(PlainLine));
    if (self->lines == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    Py_ssize_t n;
    /* Without the GIL only when nothing can call Python (every probe type known as text) and
     * nothing can change the bytes meanwhile. */
    if (size >= NOGIL_MIN_BYTES && probes.complete && self->view.readonly) {
        Py_BEGIN_ALLOW_THREADS
        n = body_array(&names, base, base + size, self->lines, most);
        Py_END_ALLOW_THREADS
    }
    else {
        n = body_array(&names, base, base + size, self->lines, most);
    }
    if (n <= 0) {
        Py_DECREF(self);
        if (n < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    self->count = n;
    return (PyObject *)self;
}

static PyObject *
Index_fold_records(Index *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyObject_TypeCheck(args[0], &RecordsType)) {
        PyErr_SetString(PyExc_TypeError, "fold_records(records: Records, resolve, window_from, "
                                         "window_to) takes four arguments");
        return NULL;
    }
    Records *records = (Records *)args[0];
    Bound from, to;
    if (records->bits != self->bits || !bound_of(args[2], &from) || !bound_of(args[3], &to)) {
        Py_RETURN_NONE; /* other probe bits, or a bound the Python fold compares */
    }
    Py_ssize_t outside;
    /* The records are held for the fold: resolve() runs Python code. */
    Py_INCREF(records);
    int failed = fold_lines(self, records->view.buf, records->lines, records->count, args[1],
                            &from, &to, &outside);
    Py_ssize_t n = records->count;
    Py_DECREF(records);
    return failed ? NULL : Py_BuildValue("nn", n, outside);
}

static PyObject *
Index_clear(Index *self, PyObject *unused)
{
    Index_release(self);
    Py_RETURN_NONE;
}

static Py_ssize_t
Index_len(Index *self)
{
    return (Py_ssize_t)self->used;
}

static PyMethodDef Index_methods[] = {
    {"fold", (PyCFunction)(void (*)(void))Index_fold, METH_FASTCALL,
     "fold(records, resolve): fold plain records (count 1, one timestamp, all in the window)."},
    {"fold_records", (PyCFunction)(void (*)(void))Index_fold_records, METH_FASTCALL,
     "fold_records(records, resolve, window_from, window_to): fold the records of a "
     "parse_records array; (records, outside the window), or None with nothing folded."},
    {"scan", (PyCFunction)(void (*)(void))Index_scan, METH_FASTCALL,
     "scan(block, resolve, window_from, window_to): fold a block of plain canonical lines from "
     "its bytes; (records, outside the window), or None with nothing folded."},
    {"clear", (PyCFunction)Index_clear, METH_NOARGS, "Forget every cached node."},
    {NULL},
};

static PySequenceMethods Index_as_sequence = {
    .sq_length = (lenfunc)Index_len,
};

static PyTypeObject IndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stella_bundle.coverage._fold.Index",
    .tp_basicsize = sizeof(Index),
    .tp_dealloc = (destructor)Index_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Index(bits, seed): node hash bytes -> NodeState, a cache of an aggregator's dicts.",
    .tp_methods = Index_methods,
    .tp_as_sequence = &Index_as_sequence,
    .tp_new = Index_new,
};

static PyMethodDef fold_functions[] = {
    {"parse_records", (PyCFunction)(void (*)(void))parse_records, METH_FASTCALL,
     "parse_records(array, bits, kinds): the records of a JSON array of plain records as "
     "Records (for Index.fold_records), or None when it is not one."},
    {NULL},
};

static struct PyModuleDef fold_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "stella_bundle.coverage._fold",
    .m_doc = "The compiled per-record fold of plain observation records (coverage/scan.py).",
    .m_size = -1,
    .m_methods = fold_functions,
};

PyMODINIT_FUNC
PyInit__fold(void)
{
    s_node_hash = PyUnicode_InternFromString("node_hash");
    s_observed_at = PyUnicode_InternFromString("observed_at");
    s_probe_type = PyUnicode_InternFromString("probe_type");
    s_first_default = PyUnicode_InternFromString("~");
    s_last_default = PyUnicode_InternFromString("");
    if (!s_node_hash || !s_observed_at || !s_probe_type || !s_first_default || !s_last_default) {
        return NULL;
    }
    byte_classes();
    if (PyType_Ready(&NodeStateType) < 0 || PyType_Ready(&IndexType) < 0
        || PyType_Ready(&RecordsType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&fold_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "NodeState", (PyObject *)&NodeStateType) < 0
        || PyModule_AddObjectRef(module, "Index", (PyObject *)&IndexType) < 0
        || PyModule_AddObjectRef(module, "Records", (PyObject *)&RecordsType) < 0
        || PyModule_AddStringConstant(module, "SOURCE_SHA256", STELLA_FOLD_SOURCE_SHA256) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
