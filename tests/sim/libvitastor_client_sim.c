/*
 * libvitastor_client_sim.c: a stand-in for Vitastor's libvitastor_client.so for machines without
 * a Vitastor cluster. It exports the C ABI of the public header src/client/vitastor_c.h
 * (as of Vitastor 3.0.8) and implements it over the simulated cluster of tests/sim:
 *
 *   - metadata (pools, image configs) comes from a real etcd: one POST <etcd>/v3/kv/txn reading
 *     <prefix>/config/global, <prefix>/config/pools and every key under <prefix>/config/inode/;
 *   - the data of layer (pool P, local id N) is the sparse file <sim_data_dir>/<P>/<N>; a 4096-byte
 *     granule is "written" iff it is allocated in that file (SEEK_DATA/SEEK_HOLE); reads go down
 *     the parent chain (see tests/sim/README.md, "Data layout").
 *
 * Behaviour reproduced from the real library (vitastor-internals.md section 4):
 *   - every callback runs synchronously inside the submitting call ("auto loop" since 2.0), so
 *     vitastor_c_uring_wait_events() has nothing to wait for and returns at once;
 *   - vitastor_c_is_ready() is 0 until the event loop first ran (on_ready, handle_events,
 *     wait_events), as the real client loads its configuration there; without any
 *     etcd_address vitastor_c_create_uring_json() prints an error and exit(1)s, and so it does
 *     when etcd cannot be read max_etcd_attempts times in a row (retried at once, each attempt
 *     bounded by etcd_quick_timeout), with the real library's messages;
 *   - watch handles of unknown images have num = 0 and size = 0;
 *   - offset and length of read/write/delete/read_bitmap must be multiples of the pool's
 *     bitmap_granularity (EINVAL), len 0 is EINVAL for write and read_bitmap, an unknown pool
 *     (or pool 0) is EINVAL, writes and deletes of a readonly layer are EROFS; the inode number
 *     within the pool is not checked (0 included), nor the image size (check_rw);
 *   - delete removes every whole object (block_size x data chunks) the range touches, and a
 *     delete of length 0 the object at its offset (vitastor-cli's merge deletes objects so);
 *   - read_bitmap: one bit per granule, LSB first, malloc'd (>= 8 bytes), freed by the caller.
 *
 * Metadata freshness: the real client follows etcd through a watch. Here the metadata is re-read
 * from etcd by vitastor_c_watch_inode (always), by vitastor_c_uring_handle_events and by every I/O
 * call when the copy is older than sim_meta_refresh_ms (option or vitastor.conf key, default 100),
 * and by an I/O call on an inode the copy does not know. Open watch handles are updated on each
 * re-read (num/size/readonly/parent/mod_revision follow the image name, as the real ones do).
 *
 * Not simulated: CAS writes (check_version is ignored), OSD object versions (the read callback
 * always gets version 0), pool granularities that are not multiples of 4096, https etcd URLs
 * (exit(1) like the real library), etcd_address taken from /config/global, inode meta (NULL),
 * QEMU fd handlers (accepted and never called), the epoll flavour (same as uring here), and the
 * eventfd of vitastor_c_uring_register_eventfd (valid, never signalled).
 *
 * Build: tests/sim/build_sim_lib.py build(out_dir), i.e. gcc -std=c11 -Wall -Wextra -O2 -shared -fPIC
 *        -fvisibility=hidden -o libvitastor_client.so libvitastor_client_sim.c
 * The library is not thread-safe, like the real one: one thread at a time per client.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/eventfd.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define SIM_VERSION "3.0.8"
#define SIM_GRANULE 4096ULL
#define DEFAULT_CONFIG_PATH "/etc/vitastor/vitastor.conf"
#define DEFAULT_PREFIX "/vitastor"
#define DEFAULT_BLOCK_SIZE (128 * 1024)
#define DEFAULT_REFRESH_MS 100
#define ETCD_ATTEMPTS 5           /* max_etcd_attempts' default */
#define ETCD_QUICK_TIMEOUT_MS 1000  /* etcd_quick_timeout's default: the first configuration load */
#define ETCD_TIMEOUT_MS 5000      /* etcd_slow_timeout's default */
#define HTTP_MAX_REPLY (512u << 20)
#define JSON_MAX_DEPTH 64
#define MAX_CHAIN 1024
#define POOL_ID_BITS 16
#define INODE_ID_BITS (64 - POOL_ID_BITS)
#define INODE_POOL(n) ((uint64_t)(n) >> INODE_ID_BITS)
#define INODE_LOCAL(n) ((uint64_t)(n) & ((1ULL << INODE_ID_BITS) - 1))
#define IMMEDIATE_NONE 0
#define IMMEDIATE_SMALL 1
#define IMMEDIATE_ALL 2

#define EXPORT __attribute__((visibility("default")))

/* ============================================================================================ */
/* public types (the ABI of vitastor_c.h)                                                       */

typedef struct vitastor_c vitastor_c;
typedef void VitastorReadHandler(void *opaque, long retval, uint64_t version);
typedef void VitastorIOHandler(void *opaque, long retval);
typedef void VitastorReadBitmapHandler(void *opaque, long retval, uint8_t *bitmap);
typedef void IOHandler(void *opaque);
typedef void QEMUSetFDHandler(void *ctx, int fd, int is_external, IOHandler *fd_read, IOHandler *fd_write,
                              void *poll_fn, void *opaque);

/* ============================================================================================ */
/* small helpers                                                                                */

/* Growable byte buffer, always NUL-terminated. */
typedef struct {
    char *data;
    size_t len, cap;
} strbuf;

static int sb_reserve(strbuf *sb, size_t more)
{
    size_t need = sb->len + more + 1;
    if (need <= sb->cap)
        return 0;
    size_t cap = sb->cap ? sb->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(sb->data, cap);
    if (!p)
        return -ENOMEM;
    sb->data = p;
    sb->cap = cap;
    return 0;
}

static int sb_add(strbuf *sb, const char *s, size_t n)
{
    if (sb_reserve(sb, n))
        return -ENOMEM;
    memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = 0;
    return 0;
}

static int sb_addf(strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sb_addf(strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || sb_reserve(sb, (size_t)n))
        return -ENOMEM;
    va_start(ap, fmt);
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
    return 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static char *read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    strbuf sb = { 0 };
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (sb_add(&sb, chunk, n)) {
            free(sb.data);
            fclose(f);
            return NULL;
        }
    }
    fclose(f);
    if (!sb.data && sb_add(&sb, "", 0))
        return NULL;
    *len_out = sb.len;
    return sb.data;
}

/* ============================================================================================ */
/* base64 (etcd's JSON gateway carries keys and values in base64)                               */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_encode(strbuf *out, const unsigned char *in, size_t len)
{
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        char q[4] = { B64[(v >> 18) & 63], B64[(v >> 12) & 63],
                      i + 1 < len ? B64[(v >> 6) & 63] : '=', i + 2 < len ? B64[v & 63] : '=' };
        if (sb_add(out, q, 4))
            return -ENOMEM;
    }
    return 0;
}

static int b64_value(char c)
{
    const char *p = c ? strchr(B64, c) : NULL;
    return p ? (int)(p - B64) : -1;
}

/* Decodes base64 (padding optional); returns a malloc'd NUL-terminated buffer or NULL. */
static char *b64_decode(const char *in, size_t len, size_t *out_len)
{
    char *out = malloc(len / 4 * 3 + 4);
    if (!out)
        return NULL;
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len && in[i] != '='; i++) {
        int v = b64_value(in[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[n] = 0;
    *out_len = n;
    return out;
}

/* ============================================================================================ */
/* a minimal JSON parser: a tree of values, enough for vitastor.conf and etcd replies           */

typedef enum { J_NULL, J_FALSE, J_TRUE, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT } jtype;

typedef struct jval {
    jtype type;
    char *str;            /* J_STRING: decoded UTF-8; J_NUMBER: the number's text */
    size_t len;           /* length of str */
    char *key;            /* the member name when inside an object */
    struct jval *child;   /* first element / member */
    struct jval *next;    /* next sibling */
} jval;

typedef struct {
    const char *p, *end;
    int depth;
} jparser;

static void json_free(jval *v)
{
    while (v) {
        jval *next = v->next;
        json_free(v->child);
        free(v->str);
        free(v->key);
        free(v);
        v = next;
    }
}

static void jp_skip_ws(jparser *jp)
{
    while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r'))
        jp->p++;
}

static int jp_hex4(jparser *jp, uint32_t *out)
{
    if (jp->end - jp->p < 4)
        return -1;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *jp->p++;
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static int utf8_put(strbuf *sb, uint32_t cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xc0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xe0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (char)(0xf0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return sb_add(sb, b, n);
}

/* Parses a string literal (jp->p at the opening quote) into a malloc'd UTF-8 buffer. */
static char *jp_string(jparser *jp, size_t *len_out)
{
    strbuf sb = { 0 };
    jp->p++;
    for (;;) {
        if (jp->p >= jp->end)
            goto fail;
        char c = *jp->p++;
        if (c == '"')
            break;
        if ((unsigned char)c < 0x20)
            goto fail;
        if (c != '\\') {
            if (sb_add(&sb, &c, 1))
                goto fail;
            continue;
        }
        if (jp->p >= jp->end)
            goto fail;
        c = *jp->p++;
        const char *simple = strchr("\"\\/bfnrt", c);
        if (c && simple) {
            static const char repl[] = "\"\\/\b\f\n\r\t";
            if (sb_add(&sb, &repl[simple - "\"\\/bfnrt"], 1))
                goto fail;
        } else if (c == 'u') {
            uint32_t cp, lo;
            if (jp_hex4(jp, &cp))
                goto fail;
            if (cp >= 0xd800 && cp < 0xdc00 && jp->end - jp->p >= 6 && jp->p[0] == '\\' && jp->p[1] == 'u') {
                const char *save = jp->p;
                jp->p += 2;
                if (!jp_hex4(jp, &lo) && lo >= 0xdc00 && lo < 0xe000)
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                else
                    jp->p = save;
            }
            if (utf8_put(&sb, cp))
                goto fail;
        } else {
            goto fail;
        }
    }
    if (!sb.data && sb_add(&sb, "", 0))
        goto fail;
    *len_out = sb.len;
    return sb.data;
fail:
    free(sb.data);
    return NULL;
}

static jval *jp_value(jparser *jp);

/* Parses the members of an array or object (jp->p just after '[' or '{') into v->child. */
static int jp_members(jparser *jp, jval *v, char close)
{
    jval **tail = &v->child;
    jp_skip_ws(jp);
    if (jp->p < jp->end && *jp->p == close) {
        jp->p++;
        return 0;
    }
    for (;;) {
        char *key = NULL;
        size_t key_len;
        jp_skip_ws(jp);
        if (close == '}') {
            if (jp->p >= jp->end || *jp->p != '"' || !(key = jp_string(jp, &key_len)))
                return -1;
            jp_skip_ws(jp);
            if (jp->p >= jp->end || *jp->p != ':') {
                free(key);
                return -1;
            }
            jp->p++;
        }
        jval *item = jp_value(jp);
        if (!item) {
            free(key);
            return -1;
        }
        item->key = key;
        *tail = item;
        tail = &item->next;
        jp_skip_ws(jp);
        if (jp->p >= jp->end)
            return -1;
        char c = *jp->p++;
        if (c == close)
            return 0;
        if (c != ',')
            return -1;
    }
}

static jval *jp_value(jparser *jp)
{
    jp_skip_ws(jp);
    if (jp->p >= jp->end || jp->depth > JSON_MAX_DEPTH)
        return NULL;
    jval *v = calloc(1, sizeof(*v));
    if (!v)
        return NULL;
    char c = *jp->p;
    size_t rest = (size_t)(jp->end - jp->p);
    if (c == '{' || c == '[') {
        v->type = c == '{' ? J_OBJECT : J_ARRAY;
        jp->p++;
        jp->depth++;
        int rc = jp_members(jp, v, c == '{' ? '}' : ']');
        jp->depth--;
        if (rc)
            goto fail;
    } else if (c == '"') {
        v->type = J_STRING;
        if (!(v->str = jp_string(jp, &v->len)))
            goto fail;
    } else if (rest >= 4 && !memcmp(jp->p, "true", 4)) {
        v->type = J_TRUE;
        jp->p += 4;
    } else if (rest >= 5 && !memcmp(jp->p, "false", 5)) {
        v->type = J_FALSE;
        jp->p += 5;
    } else if (rest >= 4 && !memcmp(jp->p, "null", 4)) {
        v->type = J_NULL;
        jp->p += 4;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        const char *start = jp->p;
        while (jp->p < jp->end && strchr("+-0123456789.eE", *jp->p))
            jp->p++;
        v->type = J_NUMBER;
        v->len = (size_t)(jp->p - start);
        if (!(v->str = strndup(start, v->len)))
            goto fail;
    } else {
        goto fail;
    }
    return v;
fail:
    json_free(v);
    return NULL;
}

/* Parses a whole JSON text; NULL if it is not exactly one valid value. */
static jval *json_parse(const char *text, size_t len)
{
    jparser jp = { text, text + len, 0 };
    jval *v = jp_value(&jp);
    jp_skip_ws(&jp);
    if (v && jp.p != jp.end) {
        json_free(v);
        return NULL;
    }
    return v;
}

static jval *json_get(const jval *obj, const char *key)
{
    if (!obj || obj->type != J_OBJECT)
        return NULL;
    for (jval *m = obj->child; m; m = m->next)
        if (m->key && !strcmp(m->key, key))
            return m;
    return NULL;
}

/* A non-negative integer from a JSON number or a numeric string (etcd sends revisions as
   strings, antietcd as numbers). Returns def when absent or not a number. */
static uint64_t json_u64(const jval *v, uint64_t def)
{
    if (!v || (v->type != J_NUMBER && v->type != J_STRING) || !v->len)
        return def;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v->str, &end, 10);
    if (!errno && *end == 0 && v->str[0] != '-')
        return x;
    double d = strtod(v->str, &end);  /* e.g. 1e6 or 4096.0 */
    if (*end == 0 && d >= 0 && d < 18446744073709551616.0)
        return (uint64_t)d;
    return def;
}

static int json_truthy(const jval *v)
{
    if (!v)
        return 0;
    switch (v->type) {
    case J_TRUE:
        return 1;
    case J_NUMBER:
        return json_u64(v, 0) != 0;
    case J_STRING:
        return !strcmp(v->str, "1") || !strcasecmp(v->str, "true") || !strcasecmp(v->str, "yes");
    default:
        return 0;
    }
}

static const char *json_str(const jval *v)
{
    return v && v->type == J_STRING ? v->str : NULL;
}

/* ============================================================================================ */
/* HTTP/1.1 client, one connection per request ("Connection: close")                            */

typedef struct {
    char *host;   /* without brackets for IPv6 */
    char *port;
    char *path;   /* API root, e.g. "/v3" */
} endpoint;

/* Parses "[http://]host[:port][/path]" ("https://" is refused by the caller). */
static int endpoint_parse(const char *addr, endpoint *ep)
{
    const char *p = addr, *host, *host_end, *port = NULL, *port_end = NULL;
    while (*p == ' ')
        p++;
    if (!strncasecmp(p, "http://", 7))
        p += 7;
    if (*p == '[') {
        host = p + 1;
        host_end = strchr(host, ']');
        if (!host_end)
            return -EINVAL;
        p = host_end + 1;
    } else {
        host = p;
        while (*p && *p != ':' && *p != '/')
            p++;
        host_end = p;
    }
    if (*p == ':') {
        port = ++p;
        while (*p >= '0' && *p <= '9')
            p++;
        port_end = p;
    }
    if (*p && *p != '/')
        return -EINVAL;
    if (host_end == host)
        return -EINVAL;
    ep->host = strndup(host, (size_t)(host_end - host));
    ep->port = port && port_end > port ? strndup(port, (size_t)(port_end - port)) : strdup("2379");
    /* no path means the default API root /v3; a trailing '/' is dropped */
    size_t plen = strlen(p);
    while (plen > 1 && p[plen - 1] == '/')
        plen--;
    ep->path = *p && plen > 1 ? strndup(p, plen) : strdup("/v3");
    if (!ep->host || !ep->port || !ep->path)
        return -ENOMEM;
    return 0;
}

static void endpoint_free(endpoint *ep)
{
    free(ep->host);
    free(ep->port);
    free(ep->path);
}

/* Connects with a timeout; returns the socket or -errno. */
static int tcp_connect(const endpoint *ep, int timeout_ms)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC }, *res, *ai;
    if (getaddrinfo(ep->host, ep->port, &hints, &res))
        return -EHOSTUNREACH;
    int err = -ECONNREFUSED;
    for (ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            err = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            err = -errno;
            close(fd);
            continue;
        }
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        int so_error = 0;
        socklen_t sl = sizeof(so_error);
        int pr = poll(&pfd, 1, timeout_ms);
        if (pr <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &sl) < 0 || so_error) {
            err = pr == 0 ? -ETIMEDOUT : so_error ? -so_error : -errno;
            close(fd);
            continue;
        }
        /* back to blocking I/O, bounded by socket timeouts */
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        freeaddrinfo(res);
        return fd;
    }
    freeaddrinfo(res);
    return err;
}

/* Case-insensitive search for a header line "name: value" in [hdr, hdr_end); returns the value. */
static const char *http_header(const char *hdr, const char *hdr_end, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *line = hdr;
    while (line < hdr_end) {
        const char *eol = memmem(line, (size_t)(hdr_end - line), "\r\n", 2);
        if (!eol)
            eol = hdr_end;
        if ((size_t)(eol - line) > nlen && !strncasecmp(line, name, nlen) && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            *vlen = (size_t)(eol - v);
            return v;
        }
        line = eol + 2;
    }
    return NULL;
}

/* Decodes a chunked body in place; returns its length or -1 when malformed/incomplete. */
static long http_unchunk(char *body, size_t len)
{
    size_t in = 0, out = 0;
    for (;;) {
        char *end;
        if (in >= len)
            return -1;
        unsigned long n = strtoul(body + in, &end, 16);
        const char *eol = memmem(end, len - (size_t)(end - body), "\r\n", 2);
        if (end == body + in || !eol)
            return -1;
        in = (size_t)(eol - body) + 2;
        if (n == 0)
            return (long)out;
        if (n > len - in || len - in - n < 2)
            return -1;
        memmove(body + out, body + in, n);
        out += n;
        in += n + 2;
    }
}

/* POSTs a JSON body to ep->path + api; on success (status 200) returns 0 and the reply body
   (malloc'd, NUL-terminated). Errors: -errno, with a description in err. */
static int http_post(const endpoint *ep, const char *api, const char *body, size_t body_len,
                     char **reply, size_t *reply_len, int timeout_ms, char *err, size_t err_size)
{
    strbuf req = { 0 }, resp = { 0 };
    int rc, fd = tcp_connect(ep, timeout_ms);
    if (fd < 0) {
        snprintf(err, err_size, "connect: %s", strerror(-fd));  /* the real http client's words */
        return fd;
    }
    int v6 = strchr(ep->host, ':') != NULL;
    rc = sb_addf(&req, "POST %s%s HTTP/1.1\r\nHost: %s%s%s:%s\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                 ep->path, api, v6 ? "[" : "", ep->host, v6 ? "]" : "", ep->port, body_len);
    if (!rc)
        rc = sb_add(&req, body, body_len);
    if (rc)
        goto out;
    for (size_t sent = 0; sent < req.len;) {
        ssize_t n = send(fd, req.data + sent, req.len - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -EPIPE;
            snprintf(err, err_size, "sending to %s:%s: %s", ep->host, ep->port, strerror(-rc));
            goto out;
        }
        sent += (size_t)n;
    }
    /* read the whole reply: the server closes the connection after it */
    for (;;) {
        if ((rc = sb_reserve(&resp, 65536)))
            goto out;
        ssize_t n = recv(fd, resp.data + resp.len, resp.cap - resp.len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = errno == EAGAIN ? -ETIMEDOUT : -errno;
            snprintf(err, err_size, "reading from %s:%s: %s", ep->host, ep->port, strerror(-rc));
            goto out;
        }
        if (n == 0)
            break;
        resp.len += (size_t)n;
        resp.data[resp.len] = 0;
        if (resp.len > HTTP_MAX_REPLY) {
            rc = -EFBIG;
            snprintf(err, err_size, "reply from %s:%s is too large", ep->host, ep->port);
            goto out;
        }
    }
    rc = -EIO;
    char *hdr_end = resp.data ? strstr(resp.data, "\r\n\r\n") : NULL;
    int status = 0;
    if (!hdr_end || sscanf(resp.data, "HTTP/1.%*d %d", &status) != 1) {
        snprintf(err, err_size, "bad HTTP reply from %s:%s", ep->host, ep->port);
        goto out;
    }
    char *content = hdr_end + 4;
    size_t content_len = resp.len - (size_t)(content - resp.data), vlen;
    const char *te = http_header(resp.data, hdr_end, "Transfer-Encoding", &vlen);
    const char *cl = http_header(resp.data, hdr_end, "Content-Length", &vlen);
    if (te && vlen >= 7 && !strncasecmp(te, "chunked", 7)) {
        long n = http_unchunk(content, content_len);
        if (n < 0) {
            snprintf(err, err_size, "bad chunked reply from %s:%s", ep->host, ep->port);
            goto out;
        }
        content_len = (size_t)n;
    } else if (cl) {
        unsigned long long n = strtoull(cl, NULL, 10);
        if (n > content_len) {
            snprintf(err, err_size, "truncated reply from %s:%s", ep->host, ep->port);
            goto out;
        }
        content_len = (size_t)n;
    }
    content[content_len] = 0;
    if (status != 200) {
        snprintf(err, err_size, "%s:%s%s%s answered %d: %.200s", ep->host, ep->port, ep->path, api, status, content);
        goto out;
    }
    *reply = strndup(content, content_len);
    *reply_len = content_len;
    rc = *reply ? 0 : -ENOMEM;
out:
    close(fd);
    free(req.data);
    free(resp.data);
    return rc;
}

/* ============================================================================================ */
/* client state                                                                                 */

typedef struct {
    uint64_t pool_id, local_id;   /* from the etcd key */
    char *name;
    uint64_t size;
    uint64_t parent_pool, parent_id;  /* parent_pool already defaulted to pool_id */
    int readonly;
    uint64_t mod_revision;
} inode_cfg;

typedef struct {
    uint64_t id;
    uint32_t block_size;       /* data_block_size */
    uint32_t data_chunks;      /* 1 for replicated, pg_size - parity_chunks for EC/XOR */
    uint32_t granularity;      /* bitmap_granularity */
    uint32_t immediate_commit; /* IMMEDIATE_* */
} pool_cfg;

/* What vitastor_c_watch_inode returns: the watched name and a copy of its current config. */
typedef struct inode_watch {
    struct inode_watch *next;
    char *name;
    uint64_t num, size, parent_num, mod_revision;
    int readonly;
} inode_watch;

struct vitastor_c {
    endpoint *endpoints;
    size_t n_endpoints;
    char *prefix;             /* etcd_prefix, with a leading '/' and no trailing '/' */
    char *data_dir;           /* sim_data_dir, NULL if not configured */
    jval *options;            /* the C-API options as a JSON object of strings */
    jval *file_config;        /* vitastor.conf */
    jval *global_config;      /* <prefix>/config/global */
    uint64_t refresh_ms;      /* metadata older than this is re-read before use */
    uint64_t loaded_at;       /* now_ms() of the last successful load */
    uint64_t fail_after;      /* sim_fail_writes_after: bytes written before writes fail, 0 = never */
    uint64_t written;         /* bytes written through this client */
    inode_cfg *inodes;
    size_t n_inodes;
    pool_cfg *pools;
    size_t n_pools;
    inode_watch *watches;
    int eventfd;              /* from vitastor_c_uring_register_eventfd, -1 until asked for */
    int ready;                /* the event loop ran once: vitastor_c_is_ready() */
    int timeout_ms;           /* of each etcd request */
};

/* A config value: C-API options first, then /config/global, then vitastor.conf. */
static const jval *conf_get(const vitastor_c *cli, const char *key)
{
    const jval *v = json_get(cli->options, key);
    if (!v)
        v = json_get(cli->global_config, key);
    if (!v)
        v = json_get(cli->file_config, key);
    return v;
}

static void free_inodes(inode_cfg *inodes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(inodes[i].name);
    free(inodes);
}

static const inode_cfg *find_inode(const vitastor_c *cli, uint64_t num)
{
    for (size_t i = 0; i < cli->n_inodes; i++)
        if (cli->inodes[i].pool_id == INODE_POOL(num) && cli->inodes[i].local_id == INODE_LOCAL(num))
            return &cli->inodes[i];
    return NULL;
}

static const pool_cfg *find_pool(const vitastor_c *cli, uint64_t pool_id)
{
    for (size_t i = 0; i < cli->n_pools; i++)
        if (cli->pools[i].id == pool_id)
            return &cli->pools[i];
    return NULL;
}

/* ---- etcd ---------------------------------------------------------------------------------- */

static int add_range(strbuf *body, const char *key, const char *range_end, int first)
{
    int rc = sb_addf(body, "%s{\"request_range\":{\"key\":\"", first ? "" : ",");
    rc = rc ? rc : b64_encode(body, (const unsigned char *)key, strlen(key));
    if (range_end) {
        rc = rc ? rc : sb_addf(body, "\",\"range_end\":\"");
        rc = rc ? rc : b64_encode(body, (const unsigned char *)range_end, strlen(range_end));
    }
    return rc ? rc : sb_addf(body, "\"}}");
}

/* One txn over the endpoints in turn; returns the parsed reply or NULL (err filled). */
static jval *etcd_txn(vitastor_c *cli, const strbuf *body, char *err, size_t err_size)
{
    for (size_t i = 0; i < cli->n_endpoints; i++) {
        char *reply = NULL;
        size_t reply_len = 0;
        if (http_post(&cli->endpoints[i], "/kv/txn", body->data, body->len, &reply, &reply_len, cli->timeout_ms,
                      err, err_size))
            continue;
        jval *v = json_parse(reply, reply_len);
        free(reply);
        if (v && v->type == J_OBJECT)
            return v;
        json_free(v);
        snprintf(err, err_size, "etcd answered something that is not a JSON object");
    }
    return NULL;
}

/* The i-th response's kvs array (its first element), or NULL when empty. */
static const jval *txn_kvs(const jval *reply, int i)
{
    const jval *resp = json_get(reply, "responses");
    const jval *r = resp && resp->type == J_ARRAY ? resp->child : NULL;
    while (r && i-- > 0)
        r = r->next;
    const jval *kvs = json_get(json_get(r, "response_range"), "kvs");
    return kvs && kvs->type == J_ARRAY ? kvs->child : NULL;
}

/* Decodes a kv's base64 value and parses it as JSON (NULL if it is not JSON). */
static jval *kv_json(const jval *kv)
{
    const char *b = json_str(json_get(kv, "value"));
    size_t len;
    char *raw = b ? b64_decode(b, strlen(b), &len) : NULL;
    jval *v = raw ? json_parse(raw, len) : NULL;
    free(raw);
    return v;
}

static uint32_t immediate_value(const jval *v, uint32_t def)
{
    const char *s = json_str(v);
    if (!s)
        return def;
    return !strcmp(s, "all") ? IMMEDIATE_ALL : !strcmp(s, "small") ? IMMEDIATE_SMALL : IMMEDIATE_NONE;
}

static int parse_pools(vitastor_c *cli, const jval *pools, pool_cfg **out, size_t *n_out)
{
    size_t n = 0, cap = 0;
    pool_cfg *arr = NULL;
    uint64_t def_block = json_u64(conf_get(cli, "block_size"), DEFAULT_BLOCK_SIZE);
    uint64_t def_gran = json_u64(conf_get(cli, "bitmap_granularity"), SIM_GRANULE);
    uint32_t def_imm = immediate_value(conf_get(cli, "immediate_commit"), IMMEDIATE_ALL);
    for (const jval *p = pools && pools->type == J_OBJECT ? pools->child : NULL; p; p = p->next) {
        char *end;
        unsigned long long id = strtoull(p->key, &end, 10);
        if (*end || id < 1 || id >= (1ULL << POOL_ID_BITS) || p->type != J_OBJECT)
            continue;  /* like the real client, invalid pool entries are skipped */
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            pool_cfg *grown = realloc(arr, cap * sizeof(*arr));
            if (!grown) {
                free(arr);
                return -ENOMEM;
            }
            arr = grown;
        }
        const char *scheme = json_str(json_get(p, "scheme"));
        uint64_t pg_size = json_u64(json_get(p, "pg_size"), 1);
        uint64_t parity = json_u64(json_get(p, "parity_chunks"), 0);
        pool_cfg *pc = &arr[n++];
        pc->id = id;
        pc->block_size = (uint32_t)json_u64(json_get(p, "block_size"), def_block);
        pc->granularity = (uint32_t)json_u64(json_get(p, "bitmap_granularity"), def_gran);
        pc->immediate_commit = immediate_value(json_get(p, "immediate_commit"), def_imm);
        pc->data_chunks = (!scheme || !strcmp(scheme, "replicated") || pg_size <= parity)
                              ? 1 : (uint32_t)(pg_size - parity);
    }
    *out = arr;
    *n_out = n;
    return 0;
}

/* Parses "<prefix>/config/inode/<pool>/<id>" keys and their JSON configs. */
static int parse_inodes(vitastor_c *cli, const jval *kv, inode_cfg **out, size_t *n_out)
{
    size_t n = 0, cap = 0, plen = strlen(cli->prefix) + strlen("/config/inode/");
    inode_cfg *arr = NULL;
    for (; kv; kv = kv->next) {
        const char *bkey = json_str(json_get(kv, "key"));
        size_t klen;
        char *key = bkey ? b64_decode(bkey, strlen(bkey), &klen) : NULL;
        unsigned long long pool = 0, id = 0;
        int ok = 0;
        if (key && klen > plen) {
            char *end;
            errno = 0;
            pool = strtoull(key + plen, &end, 10);
            if (*end == '/' && end[1] >= '0' && end[1] <= '9') {
                id = strtoull(end + 1, &end, 10);
                ok = !errno && *end == 0;
            }
        }
        free(key);
        if (!ok || pool < 1 || pool >= (1ULL << POOL_ID_BITS) || id < 1 || id >= (1ULL << INODE_ID_BITS))
            continue;  /* "Bad etcd key" */
        jval *cfg = kv_json(kv);
        if (!cfg || cfg->type != J_OBJECT) {
            json_free(cfg);  /* not an object: the inode is deleted */
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            inode_cfg *grown = realloc(arr, cap * sizeof(*arr));
            if (!grown) {
                json_free(cfg);
                free_inodes(arr, n);
                return -ENOMEM;
            }
            arr = grown;
        }
        inode_cfg *ic = &arr[n];
        const char *name = json_str(json_get(cfg, "name"));
        ic->pool_id = pool;
        ic->local_id = id;
        ic->name = strdup(name ? name : "");
        ic->size = json_u64(json_get(cfg, "size"), 0);
        ic->parent_id = json_u64(json_get(cfg, "parent_id"), 0);
        ic->parent_pool = ic->parent_id ? json_u64(json_get(cfg, "parent_pool"), pool) : 0;
        if (!ic->parent_pool && ic->parent_id)
            ic->parent_pool = pool;
        ic->readonly = json_truthy(json_get(cfg, "readonly"));
        ic->mod_revision = json_u64(json_get(kv, "mod_revision"), 0);
        json_free(cfg);
        if (!ic->name) {
            free_inodes(arr, n);
            return -ENOMEM;
        }
        n++;
    }
    *out = arr;
    *n_out = n;
    return 0;
}

static void update_watch(const vitastor_c *cli, inode_watch *w)
{
    const inode_cfg *found = NULL;
    for (size_t i = 0; i < cli->n_inodes && !found; i++)
        if (!strcmp(cli->inodes[i].name, w->name))
            found = &cli->inodes[i];
    if (!found) {
        w->num = w->size = w->parent_num = w->mod_revision = 0;
        w->readonly = 0;
        return;
    }
    w->num = found->pool_id << INODE_ID_BITS | found->local_id;
    w->size = found->size;
    w->parent_num = found->parent_id ? (found->parent_pool << INODE_ID_BITS | found->parent_id) : 0;
    w->readonly = found->readonly;
    w->mod_revision = found->mod_revision;
}

/* Re-reads /config/global, /config/pools and /config/inode/ in one txn, then updates the watches.
   Returns 0 or -errno (the previous copy is kept on failure). */
static int load_metadata(vitastor_c *cli, char *err, size_t err_size)
{
    strbuf key = { 0 }, end = { 0 }, global = { 0 }, pools = { 0 }, body = { 0 };
    int rc = sb_addf(&key, "%s/config/inode/", cli->prefix);
    rc = rc ? rc : sb_addf(&end, "%s/config/inode0", cli->prefix);
    rc = rc ? rc : sb_addf(&global, "%s/config/global", cli->prefix);
    rc = rc ? rc : sb_addf(&pools, "%s/config/pools", cli->prefix);
    rc = rc ? rc : sb_addf(&body, "{\"success\":[");
    rc = rc ? rc : add_range(&body, global.data, NULL, 1);
    rc = rc ? rc : add_range(&body, pools.data, NULL, 0);
    rc = rc ? rc : add_range(&body, key.data, end.data, 0);
    rc = rc ? rc : sb_addf(&body, "]}");
    jval *reply = NULL;
    if (!rc && !(reply = etcd_txn(cli, &body, err, err_size)))
        rc = -EIO;
    if (!rc) {
        const jval *gkv = txn_kvs(reply, 0), *pkv = txn_kvs(reply, 1);
        jval *gcfg = gkv ? kv_json(gkv) : NULL, *pcfg = pkv ? kv_json(pkv) : NULL;
        pool_cfg *new_pools = NULL;
        inode_cfg *new_inodes = NULL;
        size_t n_pools = 0, n_inodes = 0;
        json_free(cli->global_config);
        cli->global_config = gcfg && gcfg->type == J_OBJECT ? gcfg : NULL;
        if (!cli->global_config)
            json_free(gcfg);
        rc = parse_pools(cli, pcfg, &new_pools, &n_pools);
        json_free(pcfg);
        if (!rc && (rc = parse_inodes(cli, txn_kvs(reply, 2), &new_inodes, &n_inodes)))
            free(new_pools);
        if (!rc) {
            free(cli->pools);
            free_inodes(cli->inodes, cli->n_inodes);
            cli->pools = new_pools;
            cli->n_pools = n_pools;
            cli->inodes = new_inodes;
            cli->n_inodes = n_inodes;
            cli->loaded_at = now_ms();
            for (inode_watch *w = cli->watches; w; w = w->next)
                update_watch(cli, w);
        } else {
            snprintf(err, err_size, "out of memory");
        }
    }
    json_free(reply);
    free(key.data);
    free(end.data);
    free(global.data);
    free(pools.data);
    free(body.data);
    return rc;
}

/* Re-reads the metadata when it is older than refresh_ms (or always with force); failures are
   reported on stderr and the old copy stays in use, as a real client keeps its last state. */
static void refresh(vitastor_c *cli, int force)
{
    char err[512];
    if (!force && now_ms() - cli->loaded_at < cli->refresh_ms)
        return;
    if (load_metadata(cli, err, sizeof(err)))
        fprintf(stderr, "vitastor-sim: cannot refresh metadata from etcd: %s\n", err);
}

/* ---- configuration ------------------------------------------------------------------------- */

/* Adds the endpoints of one etcd_address value (comma-separated string or array of strings). */
static void add_endpoints(vitastor_c *cli, const jval *v)
{
    if (v && v->type == J_ARRAY) {
        for (const jval *e = v->child; e; e = e->next)
            add_endpoints(cli, e);
        return;
    }
    const char *s = json_str(v);
    if (!s)
        return;
    char *copy = strdup(s), *save = NULL;
    for (char *tok = copy ? strtok_r(copy, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (!*tok)
            continue;
        if (!strncasecmp(tok, "https://", 8)) {
            fprintf(stderr, "HTTPS is unsupported for etcd. Either use plain HTTP or setup a local proxy for etcd interaction\n");
            exit(1);
        }
        endpoint ep = { 0 };
        endpoint *grown = realloc(cli->endpoints, (cli->n_endpoints + 1) * sizeof(*grown));
        if (!grown || endpoint_parse(tok, &ep)) {
            if (grown)
                cli->endpoints = grown;
            endpoint_free(&ep);
            fprintf(stderr, "vitastor-sim: ignoring bad etcd address %s\n", tok);
            continue;
        }
        cli->endpoints = grown;
        cli->endpoints[cli->n_endpoints++] = ep;
    }
    free(copy);
}

static jval *options_object(const char **options, int options_len)
{
    jval *obj = calloc(1, sizeof(*obj)), **tail;
    if (!obj)
        return NULL;
    obj->type = J_OBJECT;
    tail = &obj->child;
    for (int i = 0; i + 1 < options_len; i += 2) {
        if (!options[i] || !options[i + 1] || !strcmp(options[i], "__version_check_buffer"))
            continue;
        jval *v = calloc(1, sizeof(*v));
        if (!v)
            break;
        v->type = J_STRING;
        v->key = strdup(options[i]);
        v->str = strdup(options[i + 1]);
        v->len = v->str ? strlen(v->str) : 0;
        *tail = v;
        tail = &v->next;
    }
    return obj;
}

static void client_free(vitastor_c *cli)
{
    for (size_t i = 0; i < cli->n_endpoints; i++)
        endpoint_free(&cli->endpoints[i]);
    free(cli->endpoints);
    while (cli->watches) {
        inode_watch *w = cli->watches;
        cli->watches = w->next;
        free(w->name);
        free(w);
    }
    free_inodes(cli->inodes, cli->n_inodes);
    free(cli->pools);
    if (cli->eventfd >= 0)
        close(cli->eventfd);
    free(cli->prefix);
    free(cli->data_dir);
    json_free(cli->options);
    json_free(cli->file_config);
    json_free(cli->global_config);
    free(cli);
}

/* Builds a client from key/value options; exits the process like the real library when etcd is
   not configured or stays unreachable. */
static vitastor_c *client_create(const char **options, int options_len)
{
    vitastor_c *cli = calloc(1, sizeof(*cli));
    if (!cli)
        return NULL;
    cli->eventfd = -1;
    for (int i = 0; i + 1 < options_len; i += 2) {
        /* the caller learns our version if its buffer (the value's strlen + 1) can hold it */
        if (options[i] && options[i + 1] && !strcmp(options[i], "__version_check_buffer")) {
            char *buf = (char *)options[i + 1];
            if (strlen(buf) >= strlen(SIM_VERSION))
                memcpy(buf, SIM_VERSION, sizeof(SIM_VERSION));
        }
    }
    cli->options = options_object(options, options_len);
    const char *config_path = json_str(json_get(cli->options, "config_path"));
    size_t len;
    char *text = read_file(config_path ? config_path : DEFAULT_CONFIG_PATH, &len);
    if (text) {
        cli->file_config = json_parse(text, len);
        if (!cli->file_config || cli->file_config->type != J_OBJECT) {
            fprintf(stderr, "Invalid JSON in config file %s\n", config_path ? config_path : DEFAULT_CONFIG_PATH);
            json_free(cli->file_config);
            cli->file_config = NULL;
        }
        free(text);
    }
    /* etcd_address and etcd_prefix: options first, then the file */
    const jval *addr = json_get(cli->options, "etcd_address");
    add_endpoints(cli, addr ? addr : json_get(cli->file_config, "etcd_address"));
    if (!cli->n_endpoints) {
        fprintf(stderr, "etcd_address is missing in Vitastor configuration\n");
        exit(1);
    }
    const char *prefix = json_str(conf_get(cli, "etcd_prefix"));
    strbuf sb = { 0 };
    sb_addf(&sb, "%s%s", prefix && prefix[0] == '/' ? "" : "/", prefix && *prefix ? prefix : DEFAULT_PREFIX + 1);
    while (sb.len > 1 && sb.data[sb.len - 1] == '/')
        sb.data[--sb.len] = 0;
    if (sb.len == 1)
        sb.data[--sb.len] = 0;  /* prefix "/": keys are "/config/..." */
    cli->prefix = sb.data ? sb.data : strdup("");
    const char *data_dir = json_str(conf_get(cli, "sim_data_dir"));
    cli->data_dir = data_dir ? strdup(data_dir) : NULL;
    cli->refresh_ms = json_u64(conf_get(cli, "sim_meta_refresh_ms"), DEFAULT_REFRESH_MS);
    /* fault injection: the cluster "goes away" (EIO) after this many bytes were written */
    cli->fail_after = json_u64(conf_get(cli, "sim_fail_writes_after"), 0);
    /* load_global_config: max_etcd_attempts tries without a pause, each within etcd_quick_timeout */
    char err[512] = "";
    uint64_t attempts = json_u64(conf_get(cli, "max_etcd_attempts"), ETCD_ATTEMPTS);
    cli->timeout_ms = (int)json_u64(conf_get(cli, "etcd_quick_timeout"), ETCD_QUICK_TIMEOUT_MS);
    for (uint64_t attempt = 1; load_metadata(cli, err, sizeof(err)); attempt++) {
        if (attempt >= attempts) {
            fprintf(stderr, "Error reading configuration from etcd: %s\n", err);
            exit(1);
        }
    }
    cli->timeout_ms = (int)json_u64(conf_get(cli, "etcd_slow_timeout"), ETCD_TIMEOUT_MS);
    return cli;
}

/* ============================================================================================ */
/* layer data                                                                                   */

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

/* Opens the data file of a layer; -ENOENT when it has none (an empty layer). */
static int layer_open(const vitastor_c *cli, uint64_t pool, uint64_t id, int flags)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/%llu/%llu", cli->data_dir, (unsigned long long)pool,
                 (unsigned long long)id) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    if (flags & O_CREAT) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/%llu", cli->data_dir, (unsigned long long)pool);
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
            return -errno;
    }
    int fd = open(path, flags | O_CLOEXEC, 0644);
    return fd < 0 ? -errno : fd;
}

/* The next written extent of fd in [pos, end), widened to whole granules and clipped to
   [pos, end): 1 with *s and *e set when found, 0 when none, -errno on error. */
static int next_extent(int fd, uint64_t pos, uint64_t end, uint64_t *s, uint64_t *e)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    uint64_t limit = round_up((uint64_t)st.st_size, SIM_GRANULE);
    if (end > limit)
        end = limit;
    if (pos >= end)
        return 0;
    off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
    if (data < 0)
        return errno == ENXIO ? 0 : -errno;
    if ((uint64_t)data >= end)
        return 0;
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0)
        return -errno;
    uint64_t start = (uint64_t)data / SIM_GRANULE * SIM_GRANULE;
    uint64_t stop = round_up((uint64_t)hole, SIM_GRANULE);
    *s = start < pos ? pos : start;
    *e = stop > end ? end : stop;
    return 1;
}

/* The layers an I/O on inode num reads: num itself, then its ancestors (parents from etcd). */
static size_t layer_chain(const vitastor_c *cli, uint64_t num, int with_parents, uint64_t *chain)
{
    size_t n = 0;
    chain[n++] = num;
    while (with_parents && n < MAX_CHAIN) {
        const inode_cfg *ic = find_inode(cli, chain[n - 1]);
        if (!ic || !ic->parent_id)
            break;
        uint64_t parent = ic->parent_pool << INODE_ID_BITS | ic->parent_id;
        for (size_t i = 0; i < n; i++)
            if (chain[i] == parent)
                return n;  /* a cycle in etcd: stop */
        chain[n++] = parent;
    }
    return n;
}

/* Common checks of an I/O request (check_rw): known pool, alignment, data dir. Refreshes the
   metadata when stale or when the inode is unknown. Returns the pool or NULL with *rc set. */
static const pool_cfg *check_io(vitastor_c *cli, uint64_t inode, uint64_t offset, uint64_t len,
                                int zero_len_ok, int *rc)
{
    refresh(cli, 0);
    if (!find_inode(cli, inode) && INODE_POOL(inode) && INODE_LOCAL(inode))
        refresh(cli, 1);
    const pool_cfg *pool = find_pool(cli, INODE_POOL(inode));
    /* the simulated layout tracks 4 KiB granules; smaller granularities are not simulated */
    uint64_t align = pool && pool->granularity && pool->granularity % SIM_GRANULE == 0 ? pool->granularity : SIM_GRANULE;
    if (!pool || offset % align || len % align || (!len && !zero_len_ok)) {
        *rc = -EINVAL;
        return NULL;
    }
    if (!cli->data_dir) {
        fprintf(stderr, "vitastor-sim: sim_data_dir is not set in the configuration\n");
        *rc = -EIO;
        return NULL;
    }
    *rc = 0;
    return pool;
}

static uint64_t iov_total(const struct iovec *iov, int iovcnt)
{
    uint64_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    return total;
}

/* Reads [offset, offset+len) of an image through its chain into buf (pre-zeroed). */
static int read_chain(const vitastor_c *cli, uint64_t inode, uint64_t offset, uint64_t len, uint8_t *buf)
{
    uint64_t chain[MAX_CHAIN];
    size_t n = layer_chain(cli, inode, 1, chain);
    size_t granules = (size_t)(len / SIM_GRANULE), left = granules;
    uint8_t *done = calloc(granules ? granules : 1, 1);
    if (!done)
        return -ENOMEM;
    int rc = 0;
    for (size_t l = 0; l < n && left && !rc; l++) {
        int fd = layer_open(cli, INODE_POOL(chain[l]), INODE_LOCAL(chain[l]), O_RDONLY);
        if (fd == -ENOENT)
            continue;
        if (fd < 0) {
            rc = fd;
            break;
        }
        uint64_t pos = offset, s, e;
        while (left && (rc = next_extent(fd, pos, offset + len, &s, &e)) > 0) {
            /* copy each run of granules no nearer layer provided */
            for (uint64_t g = (s - offset) / SIM_GRANULE; g < (e - offset) / SIM_GRANULE;) {
                if (done[g]) {
                    g++;
                    continue;
                }
                uint64_t run = g;
                while (run < (e - offset) / SIM_GRANULE && !done[run])
                    run++;
                size_t want = (size_t)((run - g) * SIM_GRANULE), got = 0;
                while (got < want) {
                    ssize_t r = pread(fd, buf + g * SIM_GRANULE + got, want - got,
                                      (off_t)(offset + g * SIM_GRANULE + got));
                    if (r < 0 && errno == EINTR)
                        continue;
                    if (r < 0) {
                        rc = -errno;
                        break;
                    }
                    if (r == 0)
                        break;  /* a short last granule: the rest stays zero */
                    got += (size_t)r;
                }
                if (rc < 0)
                    break;
                memset(done + g, 1, (size_t)(run - g));
                left -= (size_t)(run - g);
                g = run;
            }
            pos = e;
        }
        close(fd);
    }
    free(done);
    return rc < 0 ? rc : 0;
}

/* ============================================================================================ */
/* the exported C API                                                                           */

EXPORT vitastor_c *vitastor_c_create_uring_json(const char **options, int options_len)
{
    return client_create(options, options_len);
}

EXPORT vitastor_c *vitastor_c_create_epoll_json(const char **options, int options_len)
{
    return client_create(options, options_len);
}

/* The legacy positional creators: only config_path, etcd_host and etcd_prefix matter here. */
static vitastor_c *create_positional(const char *config_path, const char *etcd_host, const char *etcd_prefix)
{
    const char *opts[6];
    int n = 0;
    if (config_path) {
        opts[n++] = "config_path";
        opts[n++] = config_path;
    }
    if (etcd_host) {
        opts[n++] = "etcd_address";
        opts[n++] = etcd_host;
    }
    if (etcd_prefix) {
        opts[n++] = "etcd_prefix";
        opts[n++] = etcd_prefix;
    }
    return client_create(opts, n);
}

EXPORT vitastor_c *vitastor_c_create_uring(const char *config_path, const char *etcd_host, const char *etcd_prefix,
    int use_rdma, const char *rdma_device, int rdma_port_num, int rdma_gid_index, int rdma_mtu, int log_level)
{
    (void)use_rdma, (void)rdma_device, (void)rdma_port_num, (void)rdma_gid_index, (void)rdma_mtu, (void)log_level;
    return create_positional(config_path, etcd_host, etcd_prefix);
}

EXPORT vitastor_c *vitastor_c_create_qemu(QEMUSetFDHandler *aio_set_fd_handler, void *aio_context,
    const char *config_path, const char *etcd_host, const char *etcd_prefix,
    int use_rdma, const char *rdma_device, int rdma_port_num, int rdma_gid_index, int rdma_mtu, int log_level)
{
    (void)aio_set_fd_handler, (void)aio_context;
    (void)use_rdma, (void)rdma_device, (void)rdma_port_num, (void)rdma_gid_index, (void)rdma_mtu, (void)log_level;
    return create_positional(config_path, etcd_host, etcd_prefix);
}

EXPORT vitastor_c *vitastor_c_create_qemu_uring(QEMUSetFDHandler *aio_set_fd_handler, void *aio_context,
    const char *config_path, const char *etcd_host, const char *etcd_prefix,
    int use_rdma, const char *rdma_device, int rdma_port_num, int rdma_gid_index, int rdma_mtu, int log_level)
{
    (void)aio_set_fd_handler, (void)aio_context;
    (void)use_rdma, (void)rdma_device, (void)rdma_port_num, (void)rdma_gid_index, (void)rdma_mtu, (void)log_level;
    return create_positional(config_path, etcd_host, etcd_prefix);
}

EXPORT void *vitastor_c_get_internal_client(vitastor_c *client)
{
    (void)client;
    return NULL;  /* there is no cluster_client_t here */
}

EXPORT void vitastor_c_destroy(vitastor_c *client)
{
    if (client)
        client_free(client);
}

EXPORT int vitastor_c_is_ready(vitastor_c *client)
{
    return client->ready;  /* the metadata was loaded inside create, but the event loop never ran */
}

EXPORT void vitastor_c_on_ready(vitastor_c *client, VitastorIOHandler cb, void *opaque)
{
    client->ready = 1;
    cb(opaque, 0);
}

/* An eventfd for the caller's event loop. Nothing completes asynchronously here, so it is never
   signalled; it exists so that callers written for the real library can register it. */
EXPORT int vitastor_c_uring_register_eventfd(vitastor_c *client)
{
    if (client->eventfd < 0)
        client->eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return client->eventfd >= 0 ? client->eventfd : -errno;
}

EXPORT void vitastor_c_uring_wait_ready(vitastor_c *client)
{
    client->ready = 1;
}

EXPORT void vitastor_c_uring_handle_events(vitastor_c *client)
{
    client->ready = 1;
    refresh(client, 0);
}

EXPORT void vitastor_c_uring_wait_events(vitastor_c *client)
{
    client->ready = 1;  /* callbacks already ran inside the submitting calls */
}

EXPORT int vitastor_c_uring_has_work(vitastor_c *client)
{
    (void)client;
    return 0;
}

EXPORT int vitastor_c_epoll_get_fd(vitastor_c *client)
{
    (void)client;
    return -1;
}

EXPORT void vitastor_c_epoll_handle_events(vitastor_c *client, int timeout)
{
    (void)timeout;
    client->ready = 1;
    refresh(client, 0);
}

EXPORT void vitastor_c_read(vitastor_c *client, uint64_t inode, uint64_t offset, uint64_t len,
    struct iovec *iov, int iovcnt, VitastorReadHandler cb, void *opaque)
{
    int rc;
    if (!check_io(client, inode, offset, len, 1, &rc)) {
        cb(opaque, rc, 0);
        return;
    }
    if (iovcnt < 0 || iov_total(iov, iovcnt) < len) {
        cb(opaque, -EINVAL, 0);
        return;
    }
    uint8_t *buf = calloc(len ? len : 1, 1);
    if (!buf) {
        cb(opaque, -ENOMEM, 0);
        return;
    }
    rc = read_chain(client, inode, offset, len, buf);
    if (!rc) {
        /* scatter into the caller's buffers */
        uint64_t pos = 0;
        for (int i = 0; i < iovcnt && pos < len; i++) {
            size_t n = iov[i].iov_len < len - pos ? iov[i].iov_len : (size_t)(len - pos);
            memcpy(iov[i].iov_base, buf + pos, n);
            pos += n;
        }
    }
    free(buf);
    cb(opaque, rc ? rc : (long)len, 0);
}

EXPORT void vitastor_c_write(vitastor_c *client, uint64_t inode, uint64_t offset, uint64_t len, uint64_t check_version,
    struct iovec *iov, int iovcnt, VitastorIOHandler cb, void *opaque)
{
    (void)check_version;  /* CAS is not simulated */
    int rc;
    if (!check_io(client, inode, offset, len, 0, &rc)) {
        cb(opaque, rc);
        return;
    }
    const inode_cfg *ic = find_inode(client, inode);
    if (ic && ic->readonly) {
        cb(opaque, -EROFS);
        return;
    }
    if (iovcnt < 0 || iov_total(iov, iovcnt) < len) {
        cb(opaque, -EINVAL);
        return;
    }
    if (client->fail_after && client->written + len > client->fail_after) {
        cb(opaque, -EIO);
        return;
    }
    client->written += len;
    int fd = layer_open(client, INODE_POOL(inode), INODE_LOCAL(inode), O_WRONLY | O_CREAT);
    if (fd < 0) {
        cb(opaque, fd);
        return;
    }
    uint64_t pos = 0;
    for (int i = 0; i < iovcnt && pos < len && !rc; i++) {
        size_t want = iov[i].iov_len < len - pos ? iov[i].iov_len : (size_t)(len - pos), done = 0;
        while (done < want) {
            ssize_t w = pwrite(fd, (const char *)iov[i].iov_base + done, want - done, (off_t)(offset + pos + done));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                rc = w < 0 ? -errno : -EIO;
                break;
            }
            done += (size_t)w;
        }
        pos += done;
    }
    close(fd);
    cb(opaque, rc ? rc : (long)len);
}

EXPORT void vitastor_c_delete(vitastor_c *client, uint64_t inode, uint64_t offset, uint64_t len, uint64_t check_version,
    VitastorIOHandler cb, void *opaque)
{
    (void)check_version;
    int rc;
    const pool_cfg *pool = check_io(client, inode, offset, len, 1, &rc);
    if (!pool) {
        cb(opaque, rc);
        return;
    }
    const inode_cfg *ic = find_inode(client, inode);
    if (ic && ic->readonly) {
        cb(opaque, -EROFS);
        return;
    }
    /* whole objects: every object the range touches is removed, as the OSDs do; length 0 is
       one request for the object at offset (slice_rw makes one part of it) */
    uint64_t block = (uint64_t)(pool->block_size ? pool->block_size : DEFAULT_BLOCK_SIZE) * pool->data_chunks;
    uint64_t start = offset / block * block, end = len ? round_up(offset + len, block) : start + block;
    int fd = layer_open(client, INODE_POOL(inode), INODE_LOCAL(inode), O_WRONLY);
    if (fd == -ENOENT) {
        cb(opaque, (long)len);
        return;
    }
    if (fd < 0) {
        cb(opaque, fd);
        return;
    }
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)start, (off_t)(end - start)) < 0)
        rc = -errno;
    close(fd);
    cb(opaque, rc ? rc : (long)len);
}

EXPORT void vitastor_c_read_bitmap(vitastor_c *client, uint64_t inode, uint64_t offset, uint64_t len,
    int with_parents, VitastorReadBitmapHandler cb, void *opaque)
{
    uint64_t chain[MAX_CHAIN];
    int rc;
    const pool_cfg *pool = check_io(client, inode, offset, len, 0, &rc);
    if (!pool) {
        cb(opaque, rc, NULL);
        return;
    }
    uint64_t gran = pool->granularity && pool->granularity % SIM_GRANULE == 0 ? pool->granularity : SIM_GRANULE;
    uint64_t bits = len / gran;
    uint8_t *bitmap = calloc(bits / 8 + 8, 1);
    if (!bitmap) {
        cb(opaque, -ENOMEM, NULL);
        return;
    }
    size_t n = layer_chain(client, inode, with_parents, chain);
    for (size_t l = 0; l < n && !rc; l++) {
        int fd = layer_open(client, INODE_POOL(chain[l]), INODE_LOCAL(chain[l]), O_RDONLY);
        if (fd == -ENOENT)
            continue;
        if (fd < 0) {
            rc = fd;
            break;
        }
        uint64_t pos = offset, s, e;
        while ((rc = next_extent(fd, pos, offset + len, &s, &e)) > 0) {
            for (uint64_t b = (s - offset) / gran; b <= (e - 1 - offset) / gran; b++)
                bitmap[b / 8] |= (uint8_t)(1u << (b % 8));
            pos = e;
        }
        close(fd);
    }
    if (rc < 0) {
        free(bitmap);
        cb(opaque, rc, NULL);
        return;
    }
    cb(opaque, (long)bits, bitmap);
}

EXPORT void vitastor_c_sync(vitastor_c *client, VitastorIOHandler cb, void *opaque)
{
    (void)client;
    cb(opaque, 0);  /* writes went to the page cache of the data files: durable enough for tests */
}

EXPORT void vitastor_c_watch_inode(vitastor_c *client, char *image, VitastorIOHandler cb, void *opaque)
{
    inode_watch *w = calloc(1, sizeof(*w));
    if (!w || !(w->name = strdup(image ? image : ""))) {
        free(w);
        fprintf(stderr, "vitastor-sim: out of memory in watch_inode\n");
        abort();  /* the real library cannot fail here either: its handle is never NULL */
    }
    refresh(client, 1);
    update_watch(client, w);
    w->next = client->watches;
    client->watches = w;
    cb(opaque, (long)w);
}

EXPORT void vitastor_c_close_watch(vitastor_c *client, void *handle)
{
    for (inode_watch **p = &client->watches; *p; p = &(*p)->next) {
        if (*p == handle) {
            inode_watch *w = *p;
            *p = w->next;
            free(w->name);
            free(w);
            return;
        }
    }
}

EXPORT uint64_t vitastor_c_inode_get_size(void *handle)
{
    return ((inode_watch *)handle)->size;
}

EXPORT uint64_t vitastor_c_inode_get_num(void *handle)
{
    return ((inode_watch *)handle)->num;
}

EXPORT uint64_t vitastor_c_inode_get_parent_id(void *handle)
{
    return ((inode_watch *)handle)->parent_num;
}

EXPORT char *vitastor_c_inode_get_meta(void *handle)
{
    (void)handle;
    return NULL;  /* meta is not simulated */
}

EXPORT uint64_t vitastor_c_inode_get_mod_revision(void *handle)
{
    return ((inode_watch *)handle)->mod_revision;
}

EXPORT int vitastor_c_inode_get_readonly(void *handle)
{
    return ((inode_watch *)handle)->readonly;
}

EXPORT uint32_t vitastor_c_inode_get_block_size(vitastor_c *client, uint64_t inode_num)
{
    const pool_cfg *pool = find_pool(client, INODE_POOL(inode_num));
    return pool ? pool->block_size * pool->data_chunks : 0;
}

EXPORT uint32_t vitastor_c_inode_get_bitmap_granularity(vitastor_c *client, uint64_t inode_num)
{
    const pool_cfg *pool = find_pool(client, INODE_POOL(inode_num));
    return pool ? pool->granularity : 0;
}

EXPORT uint32_t vitastor_c_inode_get_immediate_commit(vitastor_c *client, uint64_t inode_num)
{
    const pool_cfg *pool = find_pool(client, INODE_POOL(inode_num));
    return pool ? pool->immediate_commit : 0;
}
