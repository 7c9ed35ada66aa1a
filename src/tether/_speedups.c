/* tether._speedups: the compiled twin of the hot path in
 * tether/protocol/frames.py (RFC 6455 sections 5.2 and 5.3).
 *
 *   apply_mask(data, mask) -> bytes
 *   build_frame(first_byte, payload, mask=None) -> bytes
 *   scan_frames(buf, pos, masked, max_frame, rsv_allowed)
 *       -> (frames, pos, error)
 *
 * The docstrings of the pure-Python functions are the contract: same
 * results, same error tuples, same order of checks. The test suite
 * (tests/test_speedups.py) compares both with Hypothesis.
 *
 * Masking runs at memory speed: a SIMD loop (AVX2 when the CPU has it,
 * chosen at import time; SSE2, the x86_64 baseline, otherwise), then a
 * 64-bit word loop, then a byte loop for the tail. On other targets
 * (aarch64, ...) the word loop does the work and the compiler may
 * vectorise it. Buffers larger than TETHER_NOGIL_THRESHOLD bytes are
 * masked or copied with the GIL released.
 */

#include "_speedups.h"

#include <string.h>

#if !defined(TETHER_NO_SIMD) && \
    (defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2))
#  include <emmintrin.h>
#  define TETHER_SSE2 1
#endif

/* AVX2 is not part of the x86_64 baseline: compile one function for it with
 * a target attribute and pick it at run time if the CPU (and OS) support it. */
#if defined(TETHER_SSE2) && (defined(__x86_64__) || defined(__i386__)) && \
    (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 6))
#  include <immintrin.h>
#  define TETHER_AVX2 1
#endif

#if defined(__GNUC__) || defined(__clang__)
#  define TETHER_RESTRICT __restrict__
#elif defined(_MSC_VER)
#  define TETHER_RESTRICT __restrict
#else
#  define TETHER_RESTRICT
#endif

/* Above this many bytes, mask or copy with the GIL released. */
#define TETHER_NOGIL_THRESHOLD ((Py_ssize_t)65536)

/* ------------------------------------------------------------------------
 * Masking kernels.
 *
 * A kernel XORs n bytes of src with the 4-byte mask repeated, starting at
 * mask phase 0, into dst (dst and src never overlap). Every block size is a
 * multiple of 4, so the phase is 0 again at the start of each loop and the
 * tail uses mask[i & 3].
 */

typedef void (*mask_kernel_fn)(uint8_t *TETHER_RESTRICT dst,
                               const uint8_t *TETHER_RESTRICT src,
                               Py_ssize_t n, const uint8_t *mask);

static inline void
mask_words(uint8_t *TETHER_RESTRICT dst, const uint8_t *TETHER_RESTRICT src,
           Py_ssize_t n, const uint8_t *mask)
{
    Py_ssize_t i = 0;
    if (n >= 8) {
        /* The mask doubled, in memory order: loads and stores through
         * memcpy are unaligned-safe and endian-neutral, and compile to
         * plain 8-byte moves on x86_64 and aarch64. */
        uint64_t m8;
        memcpy((uint8_t *)&m8, mask, 4);
        memcpy((uint8_t *)&m8 + 4, mask, 4);
        for (; i + 32 <= n; i += 32) {
            uint64_t a, b, c, d;
            memcpy(&a, src + i, 8);
            memcpy(&b, src + i + 8, 8);
            memcpy(&c, src + i + 16, 8);
            memcpy(&d, src + i + 24, 8);
            a ^= m8; b ^= m8; c ^= m8; d ^= m8;
            memcpy(dst + i, &a, 8);
            memcpy(dst + i + 8, &b, 8);
            memcpy(dst + i + 16, &c, 8);
            memcpy(dst + i + 24, &d, 8);
        }
        for (; i + 8 <= n; i += 8) {
            uint64_t a;
            memcpy(&a, src + i, 8);
            a ^= m8;
            memcpy(dst + i, &a, 8);
        }
    }
    for (; i < n; i++) {
        dst[i] = (uint8_t)(src[i] ^ mask[i & 3]);
    }
}

static void
kernel_word(uint8_t *TETHER_RESTRICT dst, const uint8_t *TETHER_RESTRICT src,
            Py_ssize_t n, const uint8_t *mask)
{
    mask_words(dst, src, n, mask);
}

#ifdef TETHER_SSE2
static void
kernel_sse2(uint8_t *TETHER_RESTRICT dst, const uint8_t *TETHER_RESTRICT src,
            Py_ssize_t n, const uint8_t *mask)
{
    Py_ssize_t i = 0;
    if (n >= 16) {
        uint32_t m4;
        memcpy(&m4, mask, 4);
        const __m128i m = _mm_set1_epi32((int)m4);
        for (; i + 64 <= n; i += 64) {
            __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
            __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
            __m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
            __m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));
            _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, m));
            _mm_storeu_si128((__m128i *)(dst + i + 16), _mm_xor_si128(b, m));
            _mm_storeu_si128((__m128i *)(dst + i + 32), _mm_xor_si128(c, m));
            _mm_storeu_si128((__m128i *)(dst + i + 48), _mm_xor_si128(d, m));
        }
        for (; i + 16 <= n; i += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
            _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, m));
        }
    }
    mask_words(dst + i, src + i, n - i, mask);
}
#endif

#ifdef TETHER_AVX2
__attribute__((target("avx2"))) static void
kernel_avx2(uint8_t *TETHER_RESTRICT dst, const uint8_t *TETHER_RESTRICT src,
            Py_ssize_t n, const uint8_t *mask)
{
    Py_ssize_t i = 0;
    if (n >= 32) {
        uint32_t m4;
        memcpy(&m4, mask, 4);
        const __m256i m = _mm256_set1_epi32((int)m4);
        for (; i + 128 <= n; i += 128) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
            __m256i b = _mm256_loadu_si256((const __m256i *)(src + i + 32));
            __m256i c = _mm256_loadu_si256((const __m256i *)(src + i + 64));
            __m256i d = _mm256_loadu_si256((const __m256i *)(src + i + 96));
            _mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(a, m));
            _mm256_storeu_si256((__m256i *)(dst + i + 32), _mm256_xor_si256(b, m));
            _mm256_storeu_si256((__m256i *)(dst + i + 64), _mm256_xor_si256(c, m));
            _mm256_storeu_si256((__m256i *)(dst + i + 96), _mm256_xor_si256(d, m));
        }
        for (; i + 32 <= n; i += 32) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
            _mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(a, m));
        }
    }
    /* Leave the last < 32 bytes to SSE2 and words; a final _mm256_zeroupper
     * is emitted by the compiler on return. */
    kernel_sse2(dst + i, src + i, n - i, mask);
}

static int
cpu_has_avx2(void)
{
    /* libgcc / compiler-rt check CPUID and that the OS saves the YMM
     * registers (XGETBV) before reporting AVX2. */
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}
#endif

/* The kernels this build has, best last. */
typedef struct {
    const char *name;
    mask_kernel_fn fn;
} kernel_entry;

static const kernel_entry kernels[] = {
    {"word", kernel_word},
#ifdef TETHER_SSE2
    {"sse2", kernel_sse2},
#endif
#ifdef TETHER_AVX2
    {"avx2", kernel_avx2},
#endif
};
#define N_KERNELS ((Py_ssize_t)(sizeof(kernels) / sizeof(kernels[0])))

/* The kernel in use: set once at import (the best one the CPU runs); only
 * the private _use_kernel() test hook changes it afterwards. */
static const kernel_entry *current_kernel = &kernels[0];

static Py_ssize_t
best_kernel_index(void)
{
    Py_ssize_t best = N_KERNELS - 1;
#ifdef TETHER_AVX2
    if (!cpu_has_avx2()) {
        best -= 1;
    }
#endif
    return best;
}

/* XOR n bytes from src into dst with the mask starting at phase 0; with the
 * GIL released for large buffers. Called with the GIL held. */
static void
mask_into(uint8_t *dst, const uint8_t *src, Py_ssize_t n, const uint8_t *mask)
{
    mask_kernel_fn fn = current_kernel->fn;
    if (n < 32) {
        /* Small frames (the common case): inline words, no vector setup. */
        mask_words(dst, src, n, mask);
    }
    else if (n > TETHER_NOGIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        fn(dst, src, n, mask);
        Py_END_ALLOW_THREADS
    }
    else {
        fn(dst, src, n, mask);
    }
}

/* memcpy, with the GIL released for large buffers. */
static void
copy_into(uint8_t *dst, const uint8_t *src, Py_ssize_t n)
{
    if (n > TETHER_NOGIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, src, (size_t)n);
        Py_END_ALLOW_THREADS
    }
    else if (n > 0) {
        memcpy(dst, src, (size_t)n);
    }
}

/* ------------------------------------------------------------------------
 * Module state (speedups_state, in _speedups.h).
 */

static inline speedups_state *
get_state(PyObject *module)
{
    return (speedups_state *)PyModule_GetState(module);
}

/* ------------------------------------------------------------------------
 * Argument helpers.
 */

/* Bind the arguments of a METH_FASTCALL | METH_KEYWORDS call to the
 * parameters `names`, like a Python def would: out[i] is a borrowed
 * reference, or NULL for an omitted optional parameter. */
static int
bind_args(const char *fname, const char *const *names, Py_ssize_t nparams,
          Py_ssize_t nrequired, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames, PyObject **out)
{
    Py_ssize_t i, k;
    if (nargs > nparams) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes %zd positional arguments but %zd were given",
                     fname, nparams, nargs);
        return -1;
    }
    for (i = 0; i < nparams; i++) {
        out[i] = i < nargs ? args[i] : NULL;
    }
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (k = 0; k < nkw; k++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, k);
            for (i = 0; i < nparams; i++) {
                if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) {
                    break;
                }
            }
            if (i == nparams) {
                PyErr_Format(PyExc_TypeError,
                             "%s() got an unexpected keyword argument '%U'",
                             fname, key);
                return -1;
            }
            if (out[i] != NULL) {
                PyErr_Format(PyExc_TypeError,
                             "%s() got multiple values for argument '%s'",
                             fname, names[i]);
                return -1;
            }
            out[i] = args[nargs + k];
        }
    }
    for (i = 0; i < nrequired; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() missing required argument '%s' (pos %zd)",
                         fname, names[i], i + 1);
            return -1;
        }
    }
    return 0;
}

/* Shared with _speedups_connection.c and _speedups_waiter.c: see
 * _speedups.h. */
PyObject *
tether_fetch_exception(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

PyObject *
tether_iternext_result(PySendResult rc, PyObject *value)
{
    PyObject *stop;
    if (rc != PYGEN_RETURN) {
        return value; /* yielded, or NULL with an exception */
    }
    if (value == Py_None) {
        Py_DECREF(value);
        return NULL; /* StopIteration without a value */
    }
    /* StopIteration(value), built so that a tuple value stays whole */
    stop = PyObject_CallOneArg(PyExc_StopIteration, value);
    Py_DECREF(value);
    if (stop != NULL) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
    }
    return NULL;
}

/* Copy a 4-byte masking key out of any bytes-like object. */
int
tether_get_mask(PyObject *obj, uint8_t out[4])
{
    if (PyBytes_CheckExact(obj)) {
        if (PyBytes_GET_SIZE(obj) != 4) {
            PyErr_Format(PyExc_ValueError, "mask must be 4 bytes, got %zd",
                         PyBytes_GET_SIZE(obj));
            return -1;
        }
        memcpy(out, PyBytes_AS_STRING(obj), 4);
        return 0;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (view.len != 4) {
        PyErr_Format(PyExc_ValueError, "mask must be 4 bytes, got %zd",
                     view.len);
        PyBuffer_Release(&view);
        return -1;
    }
    memcpy(out, view.buf, 4);
    PyBuffer_Release(&view);
    return 0;
}

/* ------------------------------------------------------------------------
 * apply_mask
 */

PyDoc_STRVAR(apply_mask_doc,
"apply_mask($module, /, data, mask)\n--\n\n"
"XOR ``data`` with the 4-byte ``mask`` repeated (RFC 6455 section 5.3).\n\n"
"``data`` is any C-contiguous bytes-like object; the result is a new\n"
"``bytes``. Raises ValueError unless ``mask`` is exactly 4 bytes.");

static PyObject *
speedups_apply_mask(PyObject *Py_UNUSED(module), PyObject *const *args,
                    Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"data", "mask"};
    PyObject *argv[2];
    uint8_t mask[4];
    Py_buffer data;
    PyObject *result;

    if (bind_args("apply_mask", names, 2, 2, args, nargs, kwnames, argv) < 0) {
        return NULL;
    }
    if (tether_get_mask(argv[1], mask) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(argv[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL) {
        mask_into((uint8_t *)PyBytes_AS_STRING(result),
                  (const uint8_t *)data.buf, data.len, mask);
    }
    PyBuffer_Release(&data);
    return result;
}

/* ------------------------------------------------------------------------
 * build_frame
 */

PyDoc_STRVAR(build_frame_doc,
"build_frame($module, /, first_byte, payload, mask=None)\n--\n\n"
"Serialize one frame (RFC 6455 section 5.2) in a single allocation.\n\n"
"``first_byte`` is FIN | RSV1-3 | opcode (0-255); ``mask`` is the 4-byte\n"
"masking key or None. The payload length uses the minimal encoding.");

static PyObject *
speedups_build_frame(PyObject *Py_UNUSED(module), PyObject *const *args,
                     Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"first_byte", "payload", "mask"};
    PyObject *argv[3];
    uint8_t mask[4];
    int has_mask;
    long first_byte;
    Py_buffer payload;
    PyObject *result;

    if (bind_args("build_frame", names, 3, 2, args, nargs, kwnames, argv) < 0) {
        return NULL;
    }
    first_byte = PyLong_AsLong(argv[0]);
    if (first_byte == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (first_byte < 0 || first_byte > 255) {
        PyErr_SetString(PyExc_ValueError, "first_byte must be in range(256)");
        return NULL;
    }
    has_mask = argv[2] != NULL && argv[2] != Py_None;
    if (has_mask && tether_get_mask(argv[2], mask) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(argv[1], &payload, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    result = tether_frame((uint8_t)first_byte, (const uint8_t *)payload.buf, payload.len,
                          has_mask ? mask : NULL);
    PyBuffer_Release(&payload);
    return result;
}

PyObject *
tether_frame(uint8_t first_byte, const uint8_t *payload, Py_ssize_t n, const uint8_t *mask)
{
    const int has_mask = mask != NULL;
    Py_ssize_t header = (n < 126 ? 2 : n < 65536 ? 4 : 10) + (has_mask ? 4 : 0);
    PyObject *result;
    uint8_t *out;

    if (n > PY_SSIZE_T_MAX - header) {
        return PyErr_NoMemory();
    }
    result = PyBytes_FromStringAndSize(NULL, header + n);
    if (result == NULL) {
        return NULL;
    }
    out = (uint8_t *)PyBytes_AS_STRING(result);
    {
        uint8_t *p = out + tether_write_header(out, first_byte, (uint64_t)n, has_mask);
        if (has_mask) {
            memcpy(p, mask, 4);
            mask_into(p + 4, payload, n, mask);
        }
        else {
            copy_into(p, payload, n);
        }
    }
    return result;
}

/* ------------------------------------------------------------------------
 * scan_frames
 */

PyDoc_STRVAR(scan_frames_doc,
"scan_frames($module, /, buf, pos, masked, max_frame, rsv_allowed, end=None,\n"
"            events=None)\n--\n\n"
"Turn the bytes of ``buf`` from ``pos`` on (up to ``end``) into complete frames.\n\n"
"Returns ``(frames, pos, error)`` exactly like\n"
":func:`tether.protocol.frames.scan_frames`: each frame is\n"
"``(first_byte, payload)`` with the payload unmasked; ``error`` is None or\n"
"``(code, reason)`` for the first frame that breaks a framing rule. With\n"
"``events`` (a list), the leading whole text and binary messages go there\n"
"directly, as ``str`` and ``bytes``.");

/* The frames found so far: on the stack, then on the heap beyond 64; moved
 * into a list of the exact size at the end (no list over-allocation). */
typedef struct {
    PyObject **items;
    Py_ssize_t count;
    Py_ssize_t capacity;
    PyObject *stack[64];
} frame_acc;

static void
acc_init(frame_acc *acc)
{
    acc->items = acc->stack;
    acc->count = 0;
    acc->capacity = (Py_ssize_t)(sizeof(acc->stack) / sizeof(acc->stack[0]));
}

/* Append `item`, stealing the reference (also on failure). */
static int
acc_push(frame_acc *acc, PyObject *item)
{
    if (acc->count == acc->capacity) {
        Py_ssize_t capacity = acc->capacity * 2;
        PyObject **items;
        if (acc->items == acc->stack) {
            items = PyMem_New(PyObject *, capacity);
            if (items != NULL) {
                memcpy(items, acc->stack, (size_t)acc->count * sizeof(PyObject *));
            }
        }
        else {
            items = acc->items;
            PyMem_Resize(items, PyObject *, capacity);
        }
        if (items == NULL) {
            Py_DECREF(item);
            PyErr_NoMemory();
            return -1;
        }
        acc->items = items;
        acc->capacity = capacity;
    }
    acc->items[acc->count++] = item;
    return 0;
}

/* Release what is left and any heap block. */
static void
acc_clear(frame_acc *acc)
{
    Py_ssize_t i;
    for (i = 0; i < acc->count; i++) {
        Py_DECREF(acc->items[i]);
    }
    acc->count = 0;
    if (acc->items != acc->stack) {
        PyMem_Free(acc->items);
        acc->items = acc->stack;
    }
}

/* A new list that takes over the items; NULL (items kept) on failure. */
static PyObject *
acc_to_list(frame_acc *acc)
{
    Py_ssize_t i;
    PyObject *list = PyList_New(acc->count);
    if (list == NULL) {
        return NULL;
    }
    for (i = 0; i < acc->count; i++) {
        PyList_SET_ITEM(list, i, acc->items[i]);
    }
    acc->count = 0;
    return list;
}

/* (code, reason) with reason a new reference (stolen); NULL on error. */
static PyObject *
frame_error(int code, PyObject *reason)
{
    PyObject *result;
    if (reason == NULL) {
        return NULL;
    }
    result = Py_BuildValue("(iN)", code, reason);
    return result;
}

static PyObject *
speedups_scan_frames(PyObject *module, PyObject *const *args,
                     Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {
        "buf", "pos", "masked", "max_frame", "rsv_allowed", "end", "events"};
    PyObject *argv[7];
    PyObject *events = NULL; /* the list for direct delivery, while it lasts */
    Py_ssize_t pos, end;
    int masked;
    PyObject *max_frame_obj;
    long long max_frame;
    int max_overflow;
    unsigned long rsv_allowed;
    Py_buffer view;
    PyObject *frames, *error, *result;

    if (bind_args("scan_frames", names, 7, 5, args, nargs, kwnames, argv) < 0) {
        return NULL;
    }
    if (argv[6] != NULL && argv[6] != Py_None) {
        if (!PyList_Check(argv[6])) {
            PyErr_SetString(PyExc_TypeError, "events must be a list or None");
            return NULL;
        }
        events = argv[6];
    }
    pos = PyNumber_AsSsize_t(argv[1], PyExc_OverflowError);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (pos < 0) {
        PyErr_SetString(PyExc_ValueError, "pos must not be negative");
        return NULL;
    }
    masked = PyObject_IsTrue(argv[2]);
    if (masked < 0) {
        return NULL;
    }
    /* Any int, however large: beyond 2**63 - 1 no frame can exceed it. */
    max_frame_obj = PyNumber_Index(argv[3]);
    if (max_frame_obj == NULL) {
        return NULL;
    }
    max_frame = PyLong_AsLongLongAndOverflow(max_frame_obj, &max_overflow);
    Py_DECREF(max_frame_obj);
    if (max_frame == -1 && !max_overflow && PyErr_Occurred()) {
        return NULL;
    }
    /* Only the low bits matter: ``b0 & 0x70 & ~rsv_allowed``; the mask
     * conversion gives the two's complement of negative ints, as Python. */
    rsv_allowed = PyLong_AsUnsignedLongMask(argv[4]);
    if (rsv_allowed == (unsigned long)-1 && PyErr_Occurred()) {
        return NULL;
    }

    if (PyObject_GetBuffer(argv[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    end = view.len;
    if (argv[5] != NULL && argv[5] != Py_None) {
        Py_ssize_t limit = PyNumber_AsSsize_t(argv[5], PyExc_OverflowError);
        if (limit == -1 && PyErr_Occurred()) {
            PyBuffer_Release(&view);
            return NULL;
        }
        if (limit < 0 || limit > end) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_ValueError, "end must be within the buffer");
            return NULL;
        }
        end = limit;
    }

    if (tether_scan(get_state(module), (const uint8_t *)view.buf, pos, end, masked, max_frame,
                    max_overflow, argv[3], rsv_allowed, events, &frames, &pos, &error) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    PyBuffer_Release(&view);
    if (frames == NULL && (frames = PyList_New(0)) == NULL) {
        Py_XDECREF(error);
        return NULL;
    }
    result = Py_BuildValue("(NnN)", frames, pos, error != NULL ? error : Py_NewRef(Py_None));
    return result;
}

int
tether_scan(speedups_state *state, const uint8_t *buf, Py_ssize_t pos, Py_ssize_t end,
            int masked, long long max_frame, int max_overflow, PyObject *max_frame_obj,
            unsigned long rsv_allowed, PyObject *events, PyObject **frames_out,
            Py_ssize_t *pos_out, PyObject **error_out)
{
    /* Only the low bits matter: ``b0 & 0x70 & ~rsv_allowed``. */
    const uint8_t rsv_forbidden = (uint8_t)(0x70 & ~rsv_allowed);
    PyObject *const *first_bytes = state->first_bytes;
    frame_acc frames;
    PyObject *error = NULL; /* the (code, reason) tuple, or NULL for None */

    acc_init(&frames);
    for (;;) {
        uint8_t b0, b1;
        unsigned int opcode;
        uint64_t length;
        Py_ssize_t header, start;
        PyObject *payload, *item, *first;

        if (pos > end || end - pos < 2) {
            break;
        }
        b0 = buf[pos];
        b1 = buf[pos + 1];
        opcode = b0 & 0x0F;
        /* Section 5.2: "RSV1, RSV2, RSV3: 1 bit each. MUST be 0 unless an
         * extension is negotiated that defines meanings for non-zero
         * values." */
        if (b0 & rsv_forbidden) {
            error = frame_error(1002, PyUnicode_FromString("reserved bits must be 0"));
            goto check_error;
        }
        /* "If an unknown opcode is received, the receiving endpoint MUST
         * _Fail the WebSocket Connection_." Known: 0, 1, 2, 8, 9, 10. */
        if (!((0x0707u >> opcode) & 1u)) {
            error = frame_error(1002, PyUnicode_FromFormat("reserved opcode %u", opcode));
            goto check_error;
        }
        /* Section 5.1: servers require masked frames, clients unmasked. */
        if ((int)(b1 >> 7) != masked) {
            error = frame_error(1002, PyUnicode_FromString(
                "incorrect masking: client frames must be masked, "
                "server frames must not"));
            goto check_error;
        }
        if (!tether_read_length(buf + pos, end - pos, &length, &header)) {
            break;
        }
        /* "the most significant bit MUST be 0" (section 5.2; only the
         * 64-bit form can set it) */
        if (length >> 63) {
            error = frame_error(1002, PyUnicode_FromString(
                "payload length with the most significant bit set"));
            goto check_error;
        }
        if (opcode >= 8) {
            /* Section 5.5: "All control frames MUST have a payload length
             * of 125 bytes or less and MUST NOT be fragmented." */
            if (length > 125) {
                error = frame_error(1002, PyUnicode_FromString("control frame too long"));
                goto check_error;
            }
            if (!(b0 & 0x80)) {
                error = frame_error(1002, PyUnicode_FromString("fragmented control frame"));
                goto check_error;
            }
        }
        if (max_overflow < 0 || (max_overflow == 0 &&
                (max_frame < 0 || length > (uint64_t)max_frame))) {
            /* f"frame of {length} bytes exceeds limit of {max_frame} bytes":
             * format the caller's object as the f-string does. */
            PyObject *empty = PyUnicode_FromStringAndSize(NULL, 0);
            PyObject *limit = empty ? PyObject_Format(max_frame_obj, empty) : NULL;
            Py_XDECREF(empty);
            if (limit != NULL) {
                error = frame_error(1009, PyUnicode_FromFormat(
                    "frame of %llu bytes exceeds limit of %U bytes",
                    (unsigned long long)length, limit));
                Py_DECREF(limit);
            }
            goto check_error;
        }
        start = pos + header + (masked ? 4 : 0);
        if (end - start < 0 || (uint64_t)(end - start) < length) {
            break;
        }
        /* length <= end - start, so it fits in a Py_ssize_t. */
        payload = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)length);
        if (payload == NULL) {
            goto fail;
        }
        if (masked) {
            mask_into((uint8_t *)PyBytes_AS_STRING(payload), buf + start,
                      (Py_ssize_t)length, buf + start - 4);
        }
        else {
            copy_into((uint8_t *)PyBytes_AS_STRING(payload), buf + start,
                      (Py_ssize_t)length);
        }
        pos = start + (Py_ssize_t)length;
        if (events != NULL) {
            /* Direct delivery of a whole message in one frame: binary as
             * is, text decoded (invalid UTF-8 ends direct delivery: the
             * frame is returned for the state machine to fail on). */
            if (b0 == 0x82) {
                int rc = PyList_Append(events, payload);
                Py_DECREF(payload);
                if (rc < 0) {
                    goto fail;
                }
                continue;
            }
            if (b0 == 0x81) {
                PyObject *text = PyUnicode_DecodeUTF8(
                    PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), NULL);
                if (text != NULL) {
                    int rc = PyList_Append(events, text);
                    Py_DECREF(text);
                    Py_DECREF(payload);
                    if (rc < 0) {
                        goto fail;
                    }
                    continue;
                }
                if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                    Py_DECREF(payload);
                    goto fail;
                }
                PyErr_Clear();
            }
            events = NULL;
        }
        item = PyTuple_New(2);
        if (item == NULL) {
            Py_DECREF(payload);
            goto fail;
        }
        first = first_bytes[b0];
        Py_INCREF(first);
        PyTuple_SET_ITEM(item, 0, first);
        PyTuple_SET_ITEM(item, 1, payload);
        if (acc_push(&frames, item) < 0) {
            goto fail;
        }
    }
    goto build;

check_error:
    if (error == NULL) {
        goto fail;
    }
build:
    *frames_out = NULL;
    if (frames.count > 0 && (*frames_out = acc_to_list(&frames)) == NULL) {
        goto fail;
    }
    *pos_out = pos;
    *error_out = error;
    acc_clear(&frames);
    return 0;

fail:
    Py_CLEAR(error);
    acc_clear(&frames);
    return -1;
}

/* ------------------------------------------------------------------------
 * masking_key(): the client's masking keys. RFC 6455 section 10.3: "the
 * masking key MUST be derived from a strong source of entropy". The keys come
 * from the operating system's generator (getentropy, the source os.urandom
 * uses), read 256 bytes at a time: one system call per 64 frames instead of
 * one per frame. Each key is handed out once; a forked child discards the
 * pool it inherited (pthread_atfork), so parent and child never share keys.
 */

#if defined(__linux__) || defined(__APPLE__) || defined(__FreeBSD__) || \
    defined(__OpenBSD__) || defined(__NetBSD__)
#  include <errno.h>
#  include <pthread.h>
#  include <sys/random.h>
#  include <unistd.h>
#  define TETHER_MASK_POOL 1
static volatile unsigned long fork_generation = 1;
static int atfork_registered = 0;

static void
mask_pool_after_fork_child(void)
{
    fork_generation++;
}
#endif

PyDoc_STRVAR(masking_key_doc,
"masking_key($module, /)\n--\n\n"
"4 random bytes for a client frame's masking key (RFC 6455 section 5.3),\n"
"from the operating system's generator, read 256 bytes at a time.");

static PyObject *
speedups_masking_key(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    uint8_t key[4];
    if (tether_masking_key_into(get_state(module), key) < 0) {
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)key, 4);
}

int
tether_is_masking_key(PyObject *obj)
{
    return PyCFunction_Check(obj) &&
           PyCFunction_GET_FUNCTION(obj) == (PyCFunction)speedups_masking_key;
}

int
tether_masking_key_into(speedups_state *state, uint8_t out[4])
{
#if defined(TETHER_MASK_POOL) && !defined(Py_GIL_DISABLED)
    if (state->mask_pos + 4 > MASK_POOL_SIZE ||
        state->mask_generation != fork_generation) {
        if (getentropy(state->mask_pool, MASK_POOL_SIZE) != 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        state->mask_pos = 0;
        state->mask_generation = fork_generation;
    }
    memcpy(out, state->mask_pool + state->mask_pos, 4);
    /* Spent: never handed out twice, not left lying in memory. */
    memset(state->mask_pool + state->mask_pos, 0, 4);
    state->mask_pos += 4;
    return 0;
#else
    /* No pool (free-threaded build, or no getentropy): ask os.urandom. */
    PyObject *os = PyImport_ImportModule("os");
    PyObject *key;
    int rc;
    if (os == NULL) {
        return -1;
    }
    key = PyObject_CallMethod(os, "urandom", "i", 4);
    Py_DECREF(os);
    (void)state;
    if (key == NULL) {
        return -1;
    }
    rc = tether_get_mask(key, out);
    Py_DECREF(key);
    return rc;
#endif
}

/* ------------------------------------------------------------------------
 * Test hooks: which masking kernel runs. Private; the test suite uses them
 * to check every kernel this build has against the pure-Python twin.
 */

static PyObject *
speedups_kernels(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t last = best_kernel_index();
    PyObject *result = PyTuple_New(last + 1);
    Py_ssize_t i;
    if (result == NULL) {
        return NULL;
    }
    for (i = 0; i <= last; i++) {
        PyObject *name = PyUnicode_FromString(kernels[i].name);
        if (name == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyTuple_SET_ITEM(result, i, name);
    }
    return result;
}

static PyObject *
speedups_use_kernel(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_ssize_t i, last = best_kernel_index();
    const kernel_entry *previous = current_kernel;
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "kernel name must be a str");
        return NULL;
    }
    for (i = 0; i <= last; i++) {
        if (PyUnicode_CompareWithASCIIString(arg, kernels[i].name) == 0) {
            current_kernel = &kernels[i];
            return PyUnicode_FromString(previous->name);
        }
    }
    PyErr_Format(PyExc_ValueError, "no masking kernel %R on this machine", arg);
    return NULL;
}

/* ------------------------------------------------------------------------
 * PayloadSink: the payload of one large frame, assembled where it will be
 * delivered.
 *
 * A frame whose payload spans several reads is written straight into the
 * bytes object that the application will receive: either copied from each
 * chunk (feed) or read into by the kernel (the sink is a writable buffer
 * over its unfilled part, for BufferedProtocol.get_buffer and recv_into) and
 * unmasked there (written). take() hands the finished bytes out. The bytes
 * object is private to the sink until then, so filling it in place is safe:
 * nobody else holds a reference, and nobody has hashed it.
 */

typedef struct {
    PyObject_HEAD
    PyObject *payload;   /* bytes of `size` bytes under construction, or NULL once taken */
    Py_ssize_t size;
    Py_ssize_t filled;   /* payload[:filled] holds unmasked payload bytes */
    Py_ssize_t exports;  /* live buffer views over the unfilled part */
    int masked;
    uint8_t mask[4];
} PayloadSinkObject;

/* mask rotated to start at payload offset `pos` (RFC 6455 section 5.3:
 * "octet i ... XOR ... octet at index i modulo 4 of the masking key"). */
static inline void
rotated_mask(const PayloadSinkObject *self, Py_ssize_t pos, uint8_t out[4])
{
    int k;
    for (k = 0; k < 4; k++) {
        out[k] = self->mask[(pos + k) & 3];
    }
}

static PyObject *
sink_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"size", "mask", NULL};
    Py_ssize_t size;
    PyObject *mask_obj = Py_None;
    PayloadSinkObject *self;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n|O:PayloadSink", kwlist,
                                     &size, &mask_obj)) {
        return NULL;
    }
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size must be >= 0");
        return NULL;
    }
    self = (PayloadSinkObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->masked = mask_obj != Py_None;
    if (self->masked && tether_get_mask(mask_obj, self->mask) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->payload = PyBytes_FromStringAndSize(NULL, size);
    if (self->payload == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->size = size;
    return (PyObject *)self;
}

static void
sink_dealloc(PayloadSinkObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    Py_CLEAR(self->payload);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int
sink_check_open(PayloadSinkObject *self)
{
    if (self->payload == NULL) {
        PyErr_SetString(PyExc_ValueError, "the payload was already taken");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(sink_feed_doc,
"feed($self, data, start=0, /)\n--\n\n"
"Copy ``data[start:]`` into the payload, unmasking it, up to the payload's\n"
"end. Returns how many bytes of ``data`` were used; the rest belongs to the\n"
"next frame.");

static PyObject *
sink_feed(PayloadSinkObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data;
    Py_ssize_t start = 0, n;
    uint8_t *dst;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "feed() takes 1 or 2 arguments");
        return NULL;
    }
    if (sink_check_open(self) < 0) {
        return NULL;
    }
    if (nargs == 2) {
        start = PyLong_AsSsize_t(args[1]);
        if (start == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (start < 0 || start > data.len) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "start out of range");
        return NULL;
    }
    n = data.len - start;
    if (n > self->size - self->filled) {
        n = self->size - self->filled;
    }
    dst = (uint8_t *)PyBytes_AS_STRING(self->payload) + self->filled;
    if (self->masked) {
        uint8_t mask[4];
        rotated_mask(self, self->filled, mask);
        mask_into(dst, (const uint8_t *)data.buf + start, n, mask);
    }
    else {
        copy_into(dst, (const uint8_t *)data.buf + start, n);
    }
    self->filled += n;
    PyBuffer_Release(&data);
    return PyLong_FromSsize_t(n);
}

PyDoc_STRVAR(sink_written_doc,
"written($self, n, /)\n--\n\n"
"The kernel wrote ``n`` bytes into the buffer this sink exported (the\n"
"unfilled part): unmask them in place and count them as filled.");

static PyObject *
sink_written(PayloadSinkObject *self, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (sink_check_open(self) < 0) {
        return NULL;
    }
    if (n < 0 || n > self->size - self->filled) {
        PyErr_SetString(PyExc_ValueError, "more bytes written than the payload holds");
        return NULL;
    }
    if (self->masked) {
        uint8_t mask[4];
        uint8_t *p = (uint8_t *)PyBytes_AS_STRING(self->payload) + self->filled;
        rotated_mask(self, self->filled, mask);
        /* In place: every kernel loads each block before it stores the same
         * block and never reads it again, so dst == src is safe. */
        mask_into(p, p, n, mask);
    }
    self->filled += n;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(sink_take_doc,
"take($self, /)\n--\n\n"
"The finished payload as ``bytes``; the sink is empty afterwards. Raises\n"
"ValueError if the payload is not complete.");

static PyObject *
sink_take(PayloadSinkObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *payload;
    if (sink_check_open(self) < 0) {
        return NULL;
    }
    if (self->filled != self->size) {
        PyErr_Format(PyExc_ValueError, "the payload is incomplete: %zd of %zd bytes",
                     self->filled, self->size);
        return NULL;
    }
    payload = self->payload;
    self->payload = NULL;
    return payload;
}

PyDoc_STRVAR(sink_peek_doc,
"peek($self, start, end, /)\n--\n\n"
"A copy of the unmasked payload bytes ``[start:end]`` (within what is\n"
"filled), e.g. to validate the UTF-8 of a text frame as it arrives.");

static PyObject *
sink_peek(PayloadSinkObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t start, end;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "peek() takes 2 arguments");
        return NULL;
    }
    if (sink_check_open(self) < 0) {
        return NULL;
    }
    start = PyLong_AsSsize_t(args[0]);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    end = PyLong_AsSsize_t(args[1]);
    if (end == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (start < 0 || end < start || end > self->filled) {
        PyErr_SetString(PyExc_ValueError, "peek() range outside the filled payload");
        return NULL;
    }
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(self->payload) + start, end - start);
}

PyDoc_STRVAR(sink_buffer_doc,
"buffer($self, /)\n--\n\n"
"A writable buffer over the unfilled part of the payload, to read into\n"
"(``recv_into``, ``BufferedProtocol.get_buffer``); then call written(n).\n"
"A memoryview, so that transports may take its len() and slice it.");

static PyObject *
sink_buffer(PayloadSinkObject *self, PyObject *Py_UNUSED(ignored))
{
    if (sink_check_open(self) < 0) {
        return NULL;
    }
    return PyMemoryView_FromObject((PyObject *)self);
}

PyObject *
tether_sink_buffer(PyObject *sink)
{
    return sink_buffer((PayloadSinkObject *)sink, NULL);
}

int
tether_sink_written(PyObject *sink, PyObject *n)
{
    PyObject *r = sink_written((PayloadSinkObject *)sink, n);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

Py_ssize_t
tether_sink_remaining(PyObject *sink)
{
    return ((PayloadSinkObject *)sink)->size - ((PayloadSinkObject *)sink)->filled;
}

PyObject *
tether_sink_start(speedups_state *state, Py_ssize_t size, const uint8_t *mask,
                  const uint8_t *data, Py_ssize_t n)
{
    PayloadSinkObject *self =
        (PayloadSinkObject *)state->sink_type->tp_alloc(state->sink_type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->masked = mask != NULL;
    if (mask != NULL) {
        memcpy(self->mask, mask, 4);
    }
    self->payload = PyBytes_FromStringAndSize(NULL, size);
    if (self->payload == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->size = size;
    if (n > size) {
        n = size;
    }
    /* as feed(): the bytes of the payload that came with the header */
    if (self->masked) {
        mask_into((uint8_t *)PyBytes_AS_STRING(self->payload), data, n, self->mask);
    }
    else {
        copy_into((uint8_t *)PyBytes_AS_STRING(self->payload), data, n);
    }
    self->filled = n;
    return (PyObject *)self;
}

PyObject *
tether_sink_take(PyObject *sink)
{
    return sink_take((PayloadSinkObject *)sink, NULL);
}

static int
sink_getbuffer(PayloadSinkObject *self, Py_buffer *view, int flags)
{
    PyObject *payload = self->payload;
    if (payload == NULL || self->filled == self->size) {
        PyErr_SetString(PyExc_BufferError, "the payload sink has no room left");
        view->obj = NULL;
        return -1;
    }
    /* The view keeps its own reference to the bytes object in `internal`:
     * it stays valid even if take() hands the payload out meanwhile. */
    if (PyBuffer_FillInfo(view, (PyObject *)self,
                          PyBytes_AS_STRING(payload) + self->filled,
                          self->size - self->filled, 0, flags) < 0) {
        return -1;
    }
    view->internal = Py_NewRef(payload);
    self->exports++;
    return 0;
}

static void
sink_releasebuffer(PayloadSinkObject *self, Py_buffer *view)
{
    Py_XDECREF((PyObject *)view->internal);
    view->internal = NULL;
    self->exports--;
}

static PyObject *
sink_get_size(PayloadSinkObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->size);
}

static PyObject *
sink_get_filled(PayloadSinkObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->filled);
}

static PyObject *
sink_get_remaining(PayloadSinkObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->size - self->filled);
}

static PyMethodDef sink_methods[] = {
    {"feed", (PyCFunction)(void (*)(void))sink_feed, METH_FASTCALL, sink_feed_doc},
    {"written", (PyCFunction)sink_written, METH_O, sink_written_doc},
    {"take", (PyCFunction)sink_take, METH_NOARGS, sink_take_doc},
    {"peek", (PyCFunction)(void (*)(void))sink_peek, METH_FASTCALL, sink_peek_doc},
    {"buffer", (PyCFunction)sink_buffer, METH_NOARGS, sink_buffer_doc},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef sink_getset[] = {
    {"size", (getter)sink_get_size, NULL, "Payload length in bytes.", NULL},
    {"filled", (getter)sink_get_filled, NULL, "Bytes of the payload received so far.", NULL},
    {"remaining", (getter)sink_get_remaining, NULL, "Bytes still to come.", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

PyDoc_STRVAR(sink_doc,
"PayloadSink(size, mask=None)\n--\n\n"
"The payload of one frame that arrives over several reads, assembled in\n"
"place: feed(chunk) or read into buffer() and call written(n); take() once\n"
"``remaining`` is 0. The compiled twin of\n"
":class:`tether.protocol.frames.PayloadSink`.");

static PyType_Slot sink_slots[] = {
    {Py_tp_new, sink_new},
    {Py_tp_dealloc, sink_dealloc},
    {Py_tp_methods, sink_methods},
    {Py_tp_getset, sink_getset},
    {Py_tp_doc, (void *)sink_doc},
    {Py_bf_getbuffer, sink_getbuffer},
    {Py_bf_releasebuffer, sink_releasebuffer},
    {0, NULL}
};

static PyType_Spec sink_spec = {
    "tether._speedups.PayloadSink",
    sizeof(PayloadSinkObject),
    0,
    Py_TPFLAGS_DEFAULT,
    sink_slots,
};

/* ------------------------------------------------------------------------
 * Module.
 */

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))speedups_apply_mask,
     METH_FASTCALL | METH_KEYWORDS, apply_mask_doc},
    {"build_frame", (PyCFunction)(void (*)(void))speedups_build_frame,
     METH_FASTCALL | METH_KEYWORDS, build_frame_doc},
    {"scan_frames", (PyCFunction)(void (*)(void))speedups_scan_frames,
     METH_FASTCALL | METH_KEYWORDS, scan_frames_doc},
    {"masking_key", speedups_masking_key, METH_NOARGS, masking_key_doc},
    {"bind_core", (PyCFunction)(void (*)(void))tether_bind_core, METH_FASTCALL,
     "bind_core($module, core_type, open_state, /)\n--\n\n"
     "Let ConnectionBase read the slots of ``core_type`` (tether.protocol's\n"
     "Connection) in place; ``open_state`` is its State.OPEN. Called once by\n"
     "tether.aio.connection. Raises TypeError if a slot it needs is missing.\n"
     "A free-threaded build binds nothing: every call takes the Python path."},
    {"_kernels", speedups_kernels, METH_NOARGS,
     "_kernels($module, /)\n--\n\nThe masking kernels this machine runs, best last."},
    {"_use_kernel", speedups_use_kernel, METH_O,
     "_use_kernel($module, name, /)\n--\n\n"
     "Switch the masking kernel (a test hook); returns the previous name."},
    {NULL, NULL, 0, NULL}
};

static int
speedups_exec(PyObject *module)
{
    speedups_state *state = get_state(module);
    int i;
    for (i = 0; i < 256; i++) {
        state->first_bytes[i] = PyLong_FromLong(i);
        if (state->first_bytes[i] == NULL) {
            return -1;
        }
    }
    current_kernel = &kernels[best_kernel_index()];
    state->mask_pos = MASK_POOL_SIZE; /* empty: filled on first use */
    state->mask_generation = 0;
#ifdef TETHER_MASK_POOL
    if (!atfork_registered) {
        if (pthread_atfork(NULL, NULL, mask_pool_after_fork_child) != 0) {
            PyErr_SetString(PyExc_RuntimeError, "pthread_atfork failed");
            return -1;
        }
        atfork_registered = 1;
    }
#endif
    {
        PyObject *sink_type = PyType_FromModuleAndSpec(module, &sink_spec, NULL);
        if (sink_type == NULL) {
            return -1;
        }
        state->sink_type = (PyTypeObject *)Py_NewRef(sink_type);
        if (PyModule_AddObject(module, "PayloadSink", sink_type) < 0) {
            Py_DECREF(sink_type);
            return -1;
        }
    }
    {
        static const char *const method_names[NAME_COUNT] = {
            [NAME_PY_GET_BUFFER] = "_py_get_buffer",
            [NAME_PY_BUFFER_UPDATED] = "_py_buffer_updated",
            [NAME_PY_SEND_NOWAIT] = "_py_send_nowait",
            [NAME_AFTER_SCAN] = "_after_scan",
            [NAME_HANDLE_EVENTS] = "_handle_events",
            [NAME_AFTER_EVENTS] = "_after_events",
            [NAME_SINK_PROGRESS] = "_sink_progress",
            [NAME_PUT] = "_put",
            [NAME_HANDLER_FAILED] = "_handler_failed",
            [NAME_RECEIVE_BUFFER] = "receive_buffer",
            [NAME_WRITE] = "write",
            [NAME_WRITELINES] = "writelines",
            [NAME_GATHER_WRITES] = "gather_writes",
            [NAME_SET_READ_LOW_WATER] = "set_read_low_water",
            [NAME_WAKE] = "wake",
            [NAME_CALL_SOON] = "call_soon",
            [NAME_CALL_EXCEPTION_HANDLER] = "call_exception_handler",
            [NAME_POP] = "_pop",
            [NAME_PY_RECV] = "_py_recv",
            [NAME_PY_SEND] = "_py_send",
            [NAME_DRAIN] = "_drain",
            [NAME_LOCKED] = "locked",
            [NAME_THROW] = "throw",
            [NAME_CLOSE] = "close",
        };
        for (i = 0; i < NAME_COUNT; i++) {
            state->names[i] = PyUnicode_InternFromString(method_names[i]);
            if (state->names[i] == NULL) {
                return -1;
            }
        }
    }
    if (tether_add_connection_base(module) < 0 || tether_add_waiter(module, state) < 0 ||
            tether_add_operation(module, state) < 0) {
        return -1;
    }
    return PyModule_AddIntConstant(module, "NOGIL_THRESHOLD",
                                   (long)TETHER_NOGIL_THRESHOLD);
}

static int
speedups_traverse(PyObject *module, visitproc visit, void *arg)
{
    speedups_state *state = get_state(module);
    int i;
    if (state == NULL) {
        return 0;
    }
    for (i = 0; i < 256; i++) {
        Py_VISIT(state->first_bytes[i]);
    }
    Py_VISIT(state->core_type);
    Py_VISIT(state->open_state);
    Py_VISIT(state->sink_type);
    Py_VISIT(state->waiter_type);
    Py_VISIT(state->operation_type);
    Py_VISIT(state->kw_context);
    Py_VISIT(state->task_type);
    Py_VISIT(state->current_task);
    Py_VISIT(state->base_loop_type);
    Py_VISIT(state->closed_ok_type);
    return 0;
}

static int
speedups_clear(PyObject *module)
{
    speedups_state *state = get_state(module);
    int i;
    if (state == NULL) {
        return 0;
    }
    for (i = 0; i < 256; i++) {
        Py_CLEAR(state->first_bytes[i]);
    }
    for (i = 0; i < NAME_COUNT; i++) {
        Py_CLEAR(state->names[i]);
    }
    Py_CLEAR(state->core_type);
    Py_CLEAR(state->open_state);
    Py_CLEAR(state->sink_type);
    Py_CLEAR(state->waiter_type);
    Py_CLEAR(state->operation_type);
    Py_CLEAR(state->kw_context);
    Py_CLEAR(state->task_type);
    Py_CLEAR(state->current_task);
    Py_CLEAR(state->base_loop_type);
    Py_CLEAR(state->closed_ok_type);
    return 0;
}

static void
speedups_free(void *module)
{
    (void)speedups_clear((PyObject *)module);
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, (void *)speedups_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL}
};

PyDoc_STRVAR(speedups_doc,
"Compiled twin of the hot path in tether.protocol.frames: masking, frame\n"
"building and frame scanning, and the client's masking keys. tether.protocol.accel picks it unless\n"
"TETHER_NO_SPEEDUPS is set in the environment.");

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "tether._speedups",
    speedups_doc,
    sizeof(speedups_state),
    speedups_methods,
    speedups_slots,
    speedups_traverse,
    speedups_clear,
    speedups_free,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}

speedups_state *
tether_state_of(PyObject *obj)
{
    PyObject *module = PyType_GetModuleByDef(Py_TYPE(obj), &speedups_module);
    return module != NULL ? PyModule_GetState(module) : NULL;
}
