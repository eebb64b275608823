/* auditor capture's engine: libpcap (TPACKET_V3 ring on Linux, the BPF filter in the kernel) to
 * pcapng blocks written from C in batches.
 *
 * libpcap is loaded at run time (dlopen of libpcap.so.0.8 / libpcap.so.1 / libpcap.so): the
 * extension builds without libpcap's headers, and a machine without libpcap gets a clear error (the
 * command then falls back to scapy's sniffing).  The few declarations below are libpcap's stable ABI.
 *
 *   h = Handle(iface, snaplen, filter, buffer_bytes, timeout_ms, netns_path)  # activated, filtered
 *   h.linktype, h.snaplen
 *   h.header(if_name, if_description, userappl) -> bytes      # SHB + IDB
 *   h.dispatch(max_ms, max_bytes, fd) -> (packets, bytes, data) # EPBs; written to fd (data b"") or
 *                                                              # returned (fd < 0)
 *   h.stats() -> (ps_recv, ps_drop, ps_ifdrop)
 *   h.statistics_block(start_ns, end_ns, delivered) -> bytes  # ISB
 *   h.close()
 *
 * dispatch() releases the GIL and returns within about max_ms (+ the ring's block timeout), so the
 * Python side checks its stop flag, duration and size bound between calls.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* ---- libpcap ABI (pcap/pcap.h, pcap/bpf.h) ---- */
typedef struct pcap pcap_t;
struct pcap_pkthdr { struct timeval ts; uint32_t caplen; uint32_t len; };
struct bpf_program { unsigned int bf_len; void *bf_insns; };
struct pcap_stat { unsigned int ps_recv, ps_drop, ps_ifdrop; };
typedef void (*pcap_handler)(unsigned char *, const struct pcap_pkthdr *, const unsigned char *);
#define PCAP_ERRBUF_SIZE 256
#define PCAP_NETMASK_UNKNOWN 0xffffffffu
#define PCAP_TSTAMP_PRECISION_NANO 1

static struct {
    void *lib;
    pcap_t *(*create)(const char *, char *);
    int (*set_snaplen)(pcap_t *, int);
    int (*set_promisc)(pcap_t *, int);
    int (*set_timeout)(pcap_t *, int);
    int (*set_buffer_size)(pcap_t *, int);
    int (*set_tstamp_precision)(pcap_t *, int);
    int (*activate)(pcap_t *);
    int (*compile)(pcap_t *, struct bpf_program *, const char *, int, uint32_t);
    int (*setfilter)(pcap_t *, struct bpf_program *);
    void (*freecode)(struct bpf_program *);
    int (*dispatch)(pcap_t *, int, pcap_handler, unsigned char *);
    int (*stats)(pcap_t *, struct pcap_stat *);
    char *(*geterr)(pcap_t *);
    const char *(*statustostr)(int);
    void (*close)(pcap_t *);
    int (*datalink)(pcap_t *);
    int (*snapshot)(pcap_t *);
    int (*get_tstamp_precision)(pcap_t *);
    const char *(*lib_version)(void);
    int (*setnonblock)(pcap_t *, int, char *);
    int (*get_selectable_fd)(pcap_t *);
} P;
static char load_error[512];

static int load_pcap(void)
{
    if (P.lib) return 0;
    const char *names[] = {"libpcap.so.0.8", "libpcap.so.1", "libpcap.so", NULL};
    void *lib = NULL;
    for (int i = 0; names[i] && !lib; i++) lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(load_error, sizeof load_error, "libpcap not found (%s)", dlerror());
        return -1;
    }
#define SYM(field, name)                                                                 \
    do {                                                                                 \
        *(void **)(&P.field) = dlsym(lib, name);                                         \
        if (!P.field) {                                                                  \
            snprintf(load_error, sizeof load_error, "libpcap lacks %s (too old?)", name); \
            dlclose(lib);                                                                \
            return -1;                                                                   \
        }                                                                                \
    } while (0)
    SYM(create, "pcap_create");
    SYM(set_snaplen, "pcap_set_snaplen");
    SYM(set_promisc, "pcap_set_promisc");
    SYM(set_timeout, "pcap_set_timeout");
    SYM(set_buffer_size, "pcap_set_buffer_size");
    SYM(set_tstamp_precision, "pcap_set_tstamp_precision");
    SYM(activate, "pcap_activate");
    SYM(compile, "pcap_compile");
    SYM(setfilter, "pcap_setfilter");
    SYM(freecode, "pcap_freecode");
    SYM(dispatch, "pcap_dispatch");
    SYM(stats, "pcap_stats");
    SYM(geterr, "pcap_geterr");
    SYM(statustostr, "pcap_statustostr");
    SYM(close, "pcap_close");
    SYM(datalink, "pcap_datalink");
    SYM(snapshot, "pcap_snapshot");
    SYM(get_tstamp_precision, "pcap_get_tstamp_precision");
    SYM(lib_version, "pcap_lib_version");
    SYM(setnonblock, "pcap_setnonblock");
    SYM(get_selectable_fd, "pcap_get_selectable_fd");
#undef SYM
    P.lib = lib;
    return 0;
}

/* ---- output buffer of pcapng blocks ---- */
typedef struct {
    uint8_t *b;
    size_t n, cap;
    int oom;
} obuf_t;

static int ob_reserve(obuf_t *o, size_t more)
{
    if (o->n + more <= o->cap) return 0;
    size_t cap = o->cap ? o->cap : 1 << 20;
    while (cap < o->n + more) cap *= 2;
    uint8_t *nb = realloc(o->b, cap);
    if (!nb) { o->oom = 1; return -1; }
    o->b = nb; o->cap = cap;
    return 0;
}
static void put32(obuf_t *o, uint32_t v) { memcpy(o->b + o->n, &v, 4); o->n += 4; }
static void put16(obuf_t *o, uint16_t v) { memcpy(o->b + o->n, &v, 2); o->n += 2; }
static void put64(obuf_t *o, uint64_t v) { memcpy(o->b + o->n, &v, 8); o->n += 8; }
static void putpad(obuf_t *o, const void *p, size_t len)
{
    memcpy(o->b + o->n, p, len);
    o->n += len;
    size_t pad = (4 - (len & 3)) & 3;
    memset(o->b + o->n, 0, pad);
    o->n += pad;
}
static size_t optlen(size_t len) { return 4 + ((len + 3) & ~(size_t)3); }
static void put_opt(obuf_t *o, uint16_t code, const void *p, size_t len)
{
    put16(o, code);
    put16(o, (uint16_t)len);
    putpad(o, p, len);
}

/* ---- the handle ---- */
typedef struct {
    PyObject_HEAD
    pcap_t *p;
    int linktype, snaplen, nano;
    int pfd; /* pcap's selectable fd (non-blocking mode: we poll it with our own timeout) */
    obuf_t out;
    uint64_t packets; /* EPBs produced in the current dispatch */
    int fd;           /* where dispatch writes (-1: keep in out) */
    int werr;         /* errno of a failed write */
    size_t flush_at;
} Handle;

static void on_packet(unsigned char *user, const struct pcap_pkthdr *h, const unsigned char *data)
{
    Handle *self = (Handle *)user;
    obuf_t *o = &self->out;
    uint32_t cap = h->caplen;
    size_t blen = 32 + ((cap + 3) & ~3u);
    if (ob_reserve(o, blen) < 0) return;
    uint64_t ts = (uint64_t)h->ts.tv_sec * 1000000000ull
                  + (uint64_t)h->ts.tv_usec * (self->nano ? 1ull : 1000ull);
    put32(o, 6);
    put32(o, (uint32_t)blen);
    put32(o, 0); /* interface 0 */
    put32(o, (uint32_t)(ts >> 32));
    put32(o, (uint32_t)ts);
    put32(o, cap);
    put32(o, h->len);
    putpad(o, data, cap);
    put32(o, (uint32_t)blen);
    self->packets++;
}

static int flush_out(Handle *self)
{
    size_t off = 0;
    while (off < self->out.n) {
        ssize_t w = write(self->fd, self->out.b + off, self->out.n - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            self->werr = errno;
            return -1;
        }
        off += (size_t)w;
    }
    self->out.n = 0;
    return 0;
}

static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static PyObject *pcap_error(const char *what, const char *detail)
{
    PyErr_Format(PyExc_OSError, "%s: %s", what, detail);
    return NULL;
}

static int enter_netns(const char *path, int *saved)
{
    *saved = -1;
    if (!path || !*path) return 0;
    int self_ns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self_ns < 0) return -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { int e = errno; close(self_ns); errno = e; return -1; }
    int rc = setns(fd, CLONE_NEWNET);
    int e = errno;
    close(fd);
    if (rc < 0) { close(self_ns); errno = e; return -1; }
    *saved = self_ns;
    return 0;
}

static void leave_netns(int saved)
{
    if (saved < 0) return;
    if (setns(saved, CLONE_NEWNET) < 0) { /* cannot happen for our own namespace; nothing to do */ }
    close(saved);
}

static int Handle_init(Handle *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"iface", "snaplen", "filter", "buffer_bytes", "timeout_ms", "netns", NULL};
    const char *iface, *filter, *netns = NULL;
    int snaplen, buffer_bytes, timeout_ms;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sisii|z", kwlist, &iface, &snaplen, &filter,
                                     &buffer_bytes, &timeout_ms, &netns))
        return -1;
    if (load_pcap() < 0) {
        PyErr_SetString(PyExc_ImportError, load_error);
        return -1;
    }
    self->fd = -1;
    char errbuf[PCAP_ERRBUF_SIZE] = "";
    int saved;
    if (enter_netns(netns, &saved) < 0) {
        PyErr_Format(PyExc_OSError, "cannot enter network namespace %s: %s", netns, strerror(errno));
        return -1;
    }
    pcap_t *p = P.create(iface, errbuf);
    if (!p) { leave_netns(saved); pcap_error(iface, errbuf); return -1; }
    P.set_snaplen(p, snaplen);
    P.set_promisc(p, 0);
    P.set_timeout(p, timeout_ms);
    P.set_buffer_size(p, buffer_bytes);
    P.set_tstamp_precision(p, PCAP_TSTAMP_PRECISION_NANO);
    int rc = P.activate(p);
    leave_netns(saved);
    if (rc < 0) {
        const char *msg = P.geterr(p), *status = P.statustostr(rc);
        int same = !msg || !*msg || strcmp(msg, status) == 0;
        PyErr_Format(PyExc_OSError, "%s: %s%s%s", iface, status, same ? "" : ": ", same ? "" : msg);
        P.close(p);
        return -1;
    }
    struct bpf_program prog;
    if (P.compile(p, &prog, filter, 1, PCAP_NETMASK_UNKNOWN) < 0) {
        PyErr_Format(PyExc_ValueError, "bad filter: %s", P.geterr(p));
        P.close(p);
        return -1;
    }
    rc = P.setfilter(p, &prog);
    P.freecode(&prog);
    if (rc < 0) {
        PyErr_Format(PyExc_OSError, "cannot set the filter: %s", P.geterr(p));
        P.close(p);
        return -1;
    }
    if (P.setnonblock(p, 1, errbuf) < 0) {
        PyErr_Format(PyExc_OSError, "cannot set non-blocking mode: %s", errbuf);
        P.close(p);
        return -1;
    }
    self->pfd = P.get_selectable_fd(p);
    self->p = p;
    self->linktype = P.datalink(p);
    self->snaplen = P.snapshot(p);
    self->nano = P.get_tstamp_precision(p) == PCAP_TSTAMP_PRECISION_NANO;
    self->flush_at = 4 << 20;
    return 0;
}

static void Handle_dealloc(Handle *self)
{
    if (self->p) P.close(self->p);
    free(self->out.b);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int need_open(Handle *self)
{
    if (!self->p) { PyErr_SetString(PyExc_ValueError, "capture handle is closed"); return -1; }
    return 0;
}

/* SHB (userappl) + IDB (if_name, if_description, if_tsresol 9, snaplen, link type) */
static PyObject *Handle_header(Handle *self, PyObject *args)
{
    const char *name, *desc, *appl;
    Py_ssize_t nlen, dlen, alen;
    if (!PyArg_ParseTuple(args, "s#s#s#", &name, &nlen, &desc, &dlen, &appl, &alen)) return NULL;
    if (nlen > 0xfff0 || dlen > 0xfff0 || alen > 0xfff0) {
        PyErr_SetString(PyExc_ValueError, "option too long");
        return NULL;
    }
    obuf_t o = {0};
    size_t shb = 28 + optlen((size_t)alen) + 4;
    size_t idb = 20 + optlen((size_t)nlen) + optlen((size_t)dlen) + optlen(1) + 4;
    if (ob_reserve(&o, shb + idb) < 0) return PyErr_NoMemory();
    put32(&o, 0x0A0D0D0A);
    put32(&o, (uint32_t)shb);
    put32(&o, 0x1A2B3C4D);
    put16(&o, 1);
    put16(&o, 0);
    put64(&o, UINT64_MAX); /* section length unknown */
    put_opt(&o, 4, appl, (size_t)alen); /* shb_userappl */
    put32(&o, 0);                     /* opt_endofopt */
    put32(&o, (uint32_t)shb);
    put32(&o, 1);
    put32(&o, (uint32_t)idb);
    put16(&o, (uint16_t)self->linktype);
    put16(&o, 0);
    put32(&o, (uint32_t)self->snaplen);
    put_opt(&o, 2, name, (size_t)nlen); /* if_name */
    put_opt(&o, 3, desc, (size_t)dlen); /* if_description */
    uint8_t res = 9;
    put_opt(&o, 9, &res, 1); /* if_tsresol: 10^-9 s */
    put32(&o, 0);
    put32(&o, (uint32_t)idb);
    PyObject *r = PyBytes_FromStringAndSize((const char *)o.b, (Py_ssize_t)o.n);
    free(o.b);
    return r;
}

/* dispatch(max_ms, max_bytes, fd) -> (packets, bytes, data) */
static PyObject *Handle_dispatch(Handle *self, PyObject *args)
{
    int max_ms, fd;
    long long max_bytes;
    if (!PyArg_ParseTuple(args, "iLi", &max_ms, &max_bytes, &fd)) return NULL;
    if (need_open(self) < 0) return NULL;
    self->packets = 0;
    self->fd = fd;
    self->werr = 0;
    self->out.n = 0;
    self->out.oom = 0;
    unsigned long long written = 0;
    int rc = 0;
    Py_BEGIN_ALLOW_THREADS
    int64_t end = mono_ms() + max_ms;
    for (;;) {
        /* without traffic the kernel never retires an empty ring block, so a blocking dispatch would
         * wait for the next packet: poll pcap's fd with our own bound, then take what is ready */
        int64_t left = end - mono_ms();
        struct pollfd pf = {.fd = self->pfd, .events = POLLIN};
        if (self->pfd >= 0) poll(&pf, 1, left > 50 ? 50 : (left > 0 ? (int)left : 0));
        rc = P.dispatch(self->p, -1, on_packet, (unsigned char *)self);
        if (rc < 0 || self->out.oom) break;
        if (fd >= 0 && self->out.n >= self->flush_at) {
            size_t n = self->out.n;
            if (flush_out(self) < 0) break;
            written += n;
        }
        if (max_bytes > 0 && (long long)(written + self->out.n) >= max_bytes) break;
        if (mono_ms() >= end) break;
    }
    if (fd >= 0 && !self->werr && !self->out.oom) {
        size_t n = self->out.n;
        if (flush_out(self) == 0) written += n;
    }
    Py_END_ALLOW_THREADS
    if (self->out.oom) return PyErr_NoMemory();
    if (self->werr) {
        errno = self->werr;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (rc == -1) return pcap_error("capture failed", P.geterr(self->p));
    if (fd >= 0)
        return Py_BuildValue("(KKy#)", (unsigned long long)self->packets, written, "", (Py_ssize_t)0);
    PyObject *r = Py_BuildValue("(KKy#)", (unsigned long long)self->packets, (unsigned long long)self->out.n,
                                self->out.b ? (const char *)self->out.b : "", (Py_ssize_t)self->out.n);
    self->out.n = 0;
    return r;
}

static PyObject *Handle_stats(Handle *self, PyObject *noargs)
{
    if (need_open(self) < 0) return NULL;
    struct pcap_stat st;
    if (P.stats(self->p, &st) < 0) return pcap_error("pcap_stats", P.geterr(self->p));
    return Py_BuildValue("(III)", st.ps_recv, st.ps_drop, st.ps_ifdrop);
}

/* ISB: isb_starttime, isb_endtime, isb_ifrecv (ps_recv), isb_ifdrop (ps_ifdrop), isb_osdrop
 * (ps_drop), isb_usrdeliv (EPBs written) */
static PyObject *Handle_statistics_block(Handle *self, PyObject *args)
{
    unsigned long long start, end, delivered;
    if (!PyArg_ParseTuple(args, "KKK", &start, &end, &delivered)) return NULL;
    if (need_open(self) < 0) return NULL;
    struct pcap_stat st;
    if (P.stats(self->p, &st) < 0) return pcap_error("pcap_stats", P.geterr(self->p));
    obuf_t o = {0};
    size_t blen = 20 + 6 * optlen(8) + 4 + 4;
    if (ob_reserve(&o, blen) < 0) return PyErr_NoMemory();
    put32(&o, 5);
    put32(&o, (uint32_t)blen);
    put32(&o, 0);
    put32(&o, (uint32_t)(end >> 32));
    put32(&o, (uint32_t)end);
    uint32_t t[2];
    t[0] = (uint32_t)(start >> 32); t[1] = (uint32_t)start;
    put_opt(&o, 2, t, 8);
    t[0] = (uint32_t)(end >> 32); t[1] = (uint32_t)end;
    put_opt(&o, 3, t, 8);
    uint64_t v;
    v = st.ps_recv; put_opt(&o, 4, &v, 8);
    v = st.ps_ifdrop; put_opt(&o, 5, &v, 8);
    v = st.ps_drop; put_opt(&o, 7, &v, 8);
    v = delivered; put_opt(&o, 8, &v, 8);
    put32(&o, 0);
    put32(&o, (uint32_t)blen);
    PyObject *r = PyBytes_FromStringAndSize((const char *)o.b, (Py_ssize_t)o.n);
    free(o.b);
    return r;
}

static PyObject *Handle_close(Handle *self, PyObject *noargs)
{
    if (self->p) { P.close(self->p); self->p = NULL; }
    Py_RETURN_NONE;
}

static PyObject *Handle_linktype(Handle *self, void *c) { return PyLong_FromLong(self->linktype); }
static PyObject *Handle_snaplen(Handle *self, void *c) { return PyLong_FromLong(self->snaplen); }

static PyMethodDef Handle_methods[] = {
    {"header", (PyCFunction)Handle_header, METH_VARARGS, "SHB + IDB bytes."},
    {"dispatch", (PyCFunction)Handle_dispatch, METH_VARARGS, "Capture for up to max_ms; see _pcapcap.c."},
    {"stats", (PyCFunction)Handle_stats, METH_NOARGS, "(ps_recv, ps_drop, ps_ifdrop)."},
    {"statistics_block", (PyCFunction)Handle_statistics_block, METH_VARARGS, "ISB bytes."},
    {"close", (PyCFunction)Handle_close, METH_NOARGS, "Close the capture."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Handle_getset[] = {
    {"linktype", (getter)Handle_linktype, NULL, "DLT of the capture", NULL},
    {"snaplen", (getter)Handle_snaplen, NULL, "snapshot length in effect", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject HandleType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "auditor.sources._pcapcap.Handle",
    .tp_basicsize = sizeof(Handle),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A libpcap capture writing pcapng blocks.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Handle_init,
    .tp_dealloc = (destructor)Handle_dealloc,
    .tp_methods = Handle_methods,
    .tp_getset = Handle_getset,
};

static PyObject *available(PyObject *m, PyObject *noargs)
{
    if (load_pcap() < 0) return Py_BuildValue("(Os)", Py_False, load_error);
    return Py_BuildValue("(Os)", Py_True, P.lib_version());
}

static PyMethodDef methods[] = {
    {"available", available, METH_NOARGS, "(True, libpcap version) or (False, why)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pcapcap", "libpcap -> pcapng capture engine (C).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__pcapcap(void)
{
    if (PyType_Ready(&HandleType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&HandleType);
    if (PyModule_AddObject(m, "Handle", (PyObject *)&HandleType) < 0) {
        Py_DECREF(&HandleType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
