/*
 * edgesqueeze.quant._histc: the |x| histogram update of calibration in one pass over a float32 buffer.
 *
 * Every value v adds one to hist[min(int(float32(|v|) * float32(scale)), bins - 1)]: the product is a float32
 * product and the index is truncated, exactly as the numpy fallback in histogram.py computes it (np.abs,
 * multiply by np.float32(scale), np.minimum(bins - 1), cast to integer), so both give the same counts.
 *
 * - count_abs(x, hist, scale): counts finite values (the caller removes NaN/Inf first).
 * - update_abs(x, hist, scale, range) -> (min, max, nonfinite, counted): one pass that also finds min/max of
 *   the finite values and counts NaN/Inf; the counts are added to hist only when max |x| <= range (the common
 *   case once a histogram's range has settled), otherwise hist is left alone and the caller grows the range.
 *
 * Why C: the numpy form takes five passes and a temporary the size of the tensor (~3 ns per value); this loop
 * takes about 1 ns. Four interleaved sub-histograms keep runs of equal values (the zero spike after a ReLU)
 * from serialising on one counter. They live in a per-thread buffer (freed with its thread) that is all zero
 * between calls, and only
 * the bins a call reached are summed and cleared, so small tensors cost little. The GIL is released while
 * counting: the tensors of one model run are counted on all cores from a thread pool. Built as an optional
 * extension; without a C compiler histogram.py uses numpy.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 4
#define CHUNK ((Py_ssize_t)1 << 30) /* values per counting pass: every uint32 sub-count stays below 2^30 */

/* Per-thread lanes (LANES x bins uint32, all zero between calls), freed when the thread ends. */
typedef struct {
    uint32_t *buf;
    Py_ssize_t bins;
} lanes_t;

static pthread_key_t lanes_key;

static void lanes_free(void *p)
{
    lanes_t *l = (lanes_t *)p;
    free(l->buf);
    free(l);
}

/* The calling thread's lanes with room for bins (stride: lanes_t.bins), or NULL when out of memory. */
static lanes_t *lanes_for(Py_ssize_t bins)
{
    lanes_t *l = (lanes_t *)pthread_getspecific(lanes_key);
    if (l == NULL) {
        l = (lanes_t *)calloc(1, sizeof(lanes_t));
        if (l == NULL || pthread_setspecific(lanes_key, l) != 0) {
            free(l);
            return NULL;
        }
    }
    if (bins > l->bins) {
        uint32_t *buf = (uint32_t *)calloc((size_t)(LANES * bins), sizeof(uint32_t));
        if (buf == NULL)
            return NULL;
        free(l->buf);
        l->buf = buf;
        l->bins = bins;
    }
    return l;
}

/* Add sub-counts [0, used) of every lane to hist (when add), and clear them. */
static void flush(uint32_t *sub, Py_ssize_t stride, Py_ssize_t used, int64_t *hist, int add)
{
    uint32_t *l0 = sub, *l1 = sub + stride, *l2 = sub + 2 * stride, *l3 = sub + 3 * stride;
    if (add)
        for (Py_ssize_t b = 0; b < used; b++)
            hist[b] += (int64_t)l0[b] + (int64_t)l1[b] + (int64_t)l2[b] + (int64_t)l3[b];
    for (int k = 0; k < LANES; k++)
        memset(sub + (Py_ssize_t)k * stride, 0, (size_t)used * sizeof(uint32_t));
}

static inline Py_ssize_t bin_of(float v, float scale, float top)
{
    float a = fabsf(v) * scale;
    return (Py_ssize_t)(int32_t)(a <= top ? a : top); /* the comparison also catches inf: |v| * scale > FLT_MAX */
}
#define BIN(v) bin_of((v), scale, top)

/* Count n finite values into the lanes. */
static void count_chunk(const float *x, Py_ssize_t n, uint32_t *sub, Py_ssize_t stride, float scale, float top)
{
    Py_ssize_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++)
            sub[(Py_ssize_t)k * stride + BIN(x[i + k])]++;
    for (; i < n; i++)
        sub[BIN(x[i])]++;
}

/* Count the finite values of x into the lanes, find their min and max, return the number of NaN/Inf. */
#define SCAN_ONE(v, lane)                                                                                          \
    do {                                                                                                       \
        float v_ = (v);                                                                                        \
        if (isfinite(v_)) {                                                                                    \
            mn = v_ < mn ? v_ : mn;                                                                            \
            mx = v_ > mx ? v_ : mx;                                                                            \
            sub[(Py_ssize_t)(lane) * stride + BIN(v_)]++;                                                      \
        } else {                                                                                               \
            bad++;                                                                                             \
        }                                                                                                      \
    } while (0)

static Py_ssize_t scan_chunk(const float *x, Py_ssize_t n, uint32_t *sub, Py_ssize_t stride, float scale,
                             float top, float *lo, float *hi)
{
    Py_ssize_t bad = 0, i = 0;
    float mn = *lo, mx = *hi;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++)
            SCAN_ONE(x[i + k], k);
    for (; i < n; i++)
        SCAN_ONE(x[i], 0);
    *lo = mn;
    *hi = mx;
    return bad;
}

static Py_ssize_t minmax(const float *x, Py_ssize_t n, float *lo, float *hi)
{
    Py_ssize_t bad = 0;
    float mn = *lo, mx = *hi;
    for (Py_ssize_t i = 0; i < n; i++) {
        float v = x[i];
        if (!isfinite(v)) {
            bad++;
            continue;
        }
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    *lo = mn;
    *hi = mx;
    return bad;
}

static int get_buffers(PyObject *args, const char *fmt, Py_buffer *xb, Py_buffer *hb, double *scale, double *range)
{
    int ok = range ? PyArg_ParseTuple(args, fmt, xb, hb, scale, range) : PyArg_ParseTuple(args, fmt, xb, hb, scale);
    if (!ok)
        return 0;
    if (xb->itemsize != 4 || xb->len % 4 != 0 || hb->itemsize != 8 || hb->len % 8 != 0 || hb->len == 0 ||
        hb->len / 8 > INT32_MAX) {
        PyErr_SetString(PyExc_TypeError, "x must be a contiguous float32 buffer and hist a writable, contiguous "
                                         "int64 buffer");
        PyBuffer_Release(xb);
        PyBuffer_Release(hb);
        return 0;
    }
    return 1;
}

static PyObject *count_abs(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer xb, hb;
    double scale_d;
    if (!get_buffers(args, "y*w*d", &xb, &hb, &scale_d, NULL))
        return NULL;
    const float *x = (const float *)xb.buf;
    int64_t *hist = (int64_t *)hb.buf;
    Py_ssize_t n = xb.len / 4, bins = hb.len / 8;
    const float scale = (float)scale_d, top = (float)(bins - 1);
    lanes_t *l = lanes_for(bins);
    if (l != NULL) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t start = 0; start < n; start += CHUNK) {
            Py_ssize_t len = n - start < CHUNK ? n - start : CHUNK;
            count_chunk(x + start, len, l->buf, l->bins, scale, top);
            flush(l->buf, l->bins, bins, hist, 1);
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&xb);
    PyBuffer_Release(&hb);
    if (l == NULL)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *update_abs(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer xb, hb;
    double scale_d, range;
    if (!get_buffers(args, "y*w*dd", &xb, &hb, &scale_d, &range))
        return NULL;
    const float *x = (const float *)xb.buf;
    int64_t *hist = (int64_t *)hb.buf;
    Py_ssize_t n = xb.len / 4, bins = hb.len / 8, bad = 0;
    const float scale = (float)scale_d, top = (float)(bins - 1);
    float lo = INFINITY, hi = -INFINITY;
    int counted = 0;
    lanes_t *l = lanes_for(bins);
    if (l != NULL) {
        uint32_t *sub = l->buf;
        Py_ssize_t stride = l->bins;
        Py_BEGIN_ALLOW_THREADS
        if (n <= CHUNK) {
            bad = scan_chunk(x, n, sub, stride, scale, top, &lo, &hi);
            counted = !((double)(-lo > hi ? -lo : hi) > range);
            float reach = fabsf(-lo > hi ? lo : hi) * scale; /* the highest bin this call touched */
            Py_ssize_t used = bad == n ? 0 : (reach <= top ? (Py_ssize_t)(int32_t)reach : bins - 1) + 1;
            flush(sub, stride, used, hist, counted);
        } else { /* a tensor of over 2^30 values: find the range first, then count chunk by chunk */
            bad = minmax(x, n, &lo, &hi);
            counted = !((double)(-lo > hi ? -lo : hi) > range);
            for (Py_ssize_t start = 0; counted && start < n; start += CHUNK) {
                Py_ssize_t len = n - start < CHUNK ? n - start : CHUNK;
                float l2 = INFINITY, h2 = -INFINITY;
                scan_chunk(x + start, len, sub, stride, scale, top, &l2, &h2);
                flush(sub, stride, bins, hist, 1);
            }
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&xb);
    PyBuffer_Release(&hb);
    if (l == NULL)
        return PyErr_NoMemory();
    return Py_BuildValue("ddnO", (double)lo, (double)hi, bad, counted ? Py_True : Py_False);
}

static PyMethodDef methods[] = {
    {"update_abs", update_abs, METH_VARARGS,
     "update_abs(x, hist, scale, range) -> (min, max, nonfinite, counted): one pass over the contiguous float32 "
     "buffer x: min and max of its finite values, the number of NaN/Inf, and their |x| counts at scale (as "
     "count_abs). The counts are added to hist only when max |x| <= range (counted is then True); otherwise "
     "hist is left as it was and the caller grows the range first."},
    {"count_abs", count_abs, METH_VARARGS,
     "count_abs(x, hist, scale): hist[min(int(float32(|v|) * float32(scale)), len(hist) - 1)] += 1 for every v "
     "of the contiguous float32 buffer x (finite values only); hist is a contiguous int64 buffer."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_histc", "Fast |x| histogram counts for calibration.",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__histc(void)
{
    static int key_made = 0;
    if (!key_made) {
        if (pthread_key_create(&lanes_key, lanes_free) != 0) {
            PyErr_SetString(PyExc_ImportError, "_histc: cannot create the per-thread buffer key");
            return NULL;
        }
        key_made = 1;
    }
    return PyModule_Create(&module);
}
