/*
 * edgesqueeze.quant._histc: the |x| histogram update of calibration in one pass over a float32 buffer.
 *
 * count_abs(x, hist, scale) adds, for every value v of x, one to hist[min(int(|v| * scale), bins - 1)], where
 * scale is rounded to float32 and the product is a float32 product, exactly as the numpy fallback in
 * histogram.py computes it (np.abs, multiply by np.float32(scale), np.minimum(bins - 1), truncate). The
 * values must be finite (the caller removes NaN/Inf first). The GIL is released while counting, so several
 * tensors can be counted at once from a thread pool.
 *
 * Why C: the numpy form needs five passes and a temporary the size of the tensor (abs, multiply, clamp, cast
 * to intp, bincount) and costs ~3 ns per value; this loop costs well under 1 ns. Four interleaved
 * sub-histograms keep runs of equal values (the zero spike after a ReLU) from serialising on one counter.
 * update_abs does the same in one pass that also finds min/max and NaN/Inf, keeping the counts only when no
 * value lies beyond the histogram's range (the common case once the range has settled).
 * Built as an optional extension: without a C compiler the numpy path is used and gives the same counts.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 4
#define CHUNK ((Py_ssize_t)1 << 30) /* values per pass: keeps every uint32 sub-count below 2^30 */

static void count_chunk(const float *x, Py_ssize_t n, uint32_t *sub, Py_ssize_t bins, float scale, float top)
{
    Py_ssize_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int k = 0; k < LANES; k++) {
            float v = fabsf(x[i + k]) * scale;
            if (!(v <= top)) /* also catches inf: |v| * scale overflowing float32 */
                v = top;
            sub[(Py_ssize_t)k * bins + (Py_ssize_t)(int32_t)v]++;
        }
    }
    for (; i < n; i++) {
        float v = fabsf(x[i]) * scale;
        if (!(v <= top))
            v = top;
        sub[(Py_ssize_t)(int32_t)v]++;
    }
}

static PyObject *count_abs(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer xb, hb;
    double scale_d;
    if (!PyArg_ParseTuple(args, "y*w*d", &xb, &hb, &scale_d))
        return NULL;
    PyObject *result = NULL;
    uint32_t *sub = NULL;
    if (xb.itemsize != 4 || xb.len % 4 != 0) {
        PyErr_SetString(PyExc_TypeError, "count_abs: x must be a contiguous float32 buffer");
        goto done;
    }
    if (hb.itemsize != 8 || hb.len % 8 != 0 || hb.len == 0) {
        PyErr_SetString(PyExc_TypeError, "count_abs: hist must be a writable, contiguous int64 buffer");
        goto done;
    }
    Py_ssize_t n = xb.len / 4, bins = hb.len / 8;
    if (bins > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "count_abs: too many bins");
        goto done;
    }
    sub = (uint32_t *)calloc((size_t)(LANES * bins), sizeof(uint32_t));
    if (sub == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const float *x = (const float *)xb.buf;
    int64_t *hist = (int64_t *)hb.buf;
    const float scale = (float)scale_d, top = (float)(bins - 1);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t start = 0; start < n; start += CHUNK) {
        Py_ssize_t len = n - start < CHUNK ? n - start : CHUNK;
        count_chunk(x + start, len, sub, bins, scale, top);
        for (Py_ssize_t b = 0; b < bins; b++) {
            int64_t s = 0;
            for (int k = 0; k < LANES; k++) {
                s += sub[(Py_ssize_t)k * bins + b];
                sub[(Py_ssize_t)k * bins + b] = 0;
            }
            hist[b] += s;
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    free(sub);
    PyBuffer_Release(&xb);
    PyBuffer_Release(&hb);
    return result;
}

/* One pass: count the finite values of x into sub-histograms and find their min and max. */
static Py_ssize_t scan_chunk(const float *x, Py_ssize_t n, uint32_t *sub, Py_ssize_t bins, float scale, float top,
                             float *lo, float *hi)
{
    Py_ssize_t bad = 0;
    float mn = *lo, mx = *hi;
    Py_ssize_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int k = 0; k < LANES; k++) {
            float v = x[i + k];
            if (!isfinite(v)) {
                bad++;
                continue;
            }
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
            float a = fabsf(v) * scale;
            if (!(a <= top))
                a = top;
            sub[(Py_ssize_t)k * bins + (Py_ssize_t)(int32_t)a]++;
        }
    }
    for (; i < n; i++) {
        float v = x[i];
        if (!isfinite(v)) {
            bad++;
            continue;
        }
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        float a = fabsf(v) * scale;
        if (!(a <= top))
            a = top;
        sub[(Py_ssize_t)(int32_t)a]++;
    }
    *lo = mn;
    *hi = mx;
    return bad;
}

static PyObject *update_abs(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer xb, hb;
    double scale_d, range;
    if (!PyArg_ParseTuple(args, "y*w*dd", &xb, &hb, &scale_d, &range))
        return NULL;
    PyObject *result = NULL;
    uint32_t *sub = NULL;
    if (xb.itemsize != 4 || xb.len % 4 != 0 || hb.itemsize != 8 || hb.len % 8 != 0 || hb.len == 0 ||
        hb.len / 8 > INT32_MAX) {
        PyErr_SetString(PyExc_TypeError, "update_abs: x must be contiguous float32, hist contiguous int64");
        goto done;
    }
    Py_ssize_t n = xb.len / 4, bins = hb.len / 8, bad = 0;
    sub = (uint32_t *)calloc((size_t)(LANES * bins), sizeof(uint32_t));
    if (sub == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const float *x = (const float *)xb.buf;
    int64_t *hist = (int64_t *)hb.buf;
    const float scale = (float)scale_d, top = (float)(bins - 1);
    float lo = INFINITY, hi = -INFINITY;
    int counted;
    Py_BEGIN_ALLOW_THREADS
    int64_t *acc = (int64_t *)calloc((size_t)bins, sizeof(int64_t));
    if (acc != NULL) {
        for (Py_ssize_t start = 0; start < n; start += CHUNK) {
            Py_ssize_t len = n - start < CHUNK ? n - start : CHUNK;
            bad += scan_chunk(x + start, len, sub, bins, scale, top, &lo, &hi);
            for (Py_ssize_t b = 0; b < bins; b++) {
                for (int k = 0; k < LANES; k++) {
                    acc[b] += sub[(Py_ssize_t)k * bins + b];
                    sub[(Py_ssize_t)k * bins + b] = 0;
                }
            }
        }
        double top_abs = (double)(-lo > hi ? -lo : hi);
        counted = !(top_abs > range); /* within the range: the counts are right, keep them */
        if (counted)
            for (Py_ssize_t b = 0; b < bins; b++)
                hist[b] += acc[b];
        free(acc);
    } else {
        counted = -1;
    }
    Py_END_ALLOW_THREADS
    if (counted < 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = Py_BuildValue("ddnO", (double)lo, (double)hi, bad, counted ? Py_True : Py_False);
done:
    free(sub);
    PyBuffer_Release(&xb);
    PyBuffer_Release(&hb);
    return result;
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

PyMODINIT_FUNC PyInit__histc(void) { return PyModule_Create(&module); }
