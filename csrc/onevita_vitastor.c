/* onevita's data plane: synchronous copies between files and Vitastor images.
 *
 * A plain shared object (no Python headers): Python reaches it through an ABI-mode cffi module
 * (csrc/vitastor.cdef). libvitastor_client is loaded at run time with dlopen from the path the
 * caller gives, so onevita imports and runs without it wherever no data moves.
 *
 * Every call drives the io_uring client's event loop itself until its work is done. Since
 * Vitastor 2.0 a submit call may run callbacks before it returns, so callbacks only record
 * results (and count completions); all submissions happen in the copy loop.
 *
 * Copies go one block at a time (the pool's object size), up to queue_depth blocks in flight.
 * Holes are skipped: SEEK_DATA on regular files, read_bitmap(with_parents=1) on images, and
 * granules of zeros are not written (unless OV_WRITE_ZEROES, or the target is a stream).
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define OV_ABI_VERSION 1
#define OV_WRITE_ZEROES 1

#define SECTOR 4096u
#define MAX_QUEUE_DEPTH 256
#define MAX_BUFFERS (256u << 20)
#define VERSION_FILL 'x'

/* The C API of libvitastor_client (src/client/vitastor_c.h), as far as onevita uses it. */
typedef struct vitastor_c vitastor_c;
typedef void vitastor_read_cb(void *opaque, long retval, uint64_t version);
typedef void vitastor_io_cb(void *opaque, long retval);
typedef void vitastor_bitmap_cb(void *opaque, long retval, uint8_t *bitmap);

typedef struct ov_client {
    void *dl;
    vitastor_c *cli;
    uint64_t events; /* completions seen by any callback */
    vitastor_c *(*create_uring_json)(const char **options, int options_len);
    void (*destroy)(vitastor_c *client);
    void (*handle_events)(vitastor_c *client);
    void (*wait_events)(vitastor_c *client);
    void (*read)(vitastor_c *client, uint64_t inode, uint64_t offset, uint64_t len,
                 struct iovec *iov, int iovcnt, vitastor_read_cb *cb, void *opaque);
    void (*write)(vitastor_c *client, uint64_t inode, uint64_t offset, uint64_t len, uint64_t check_version,
                  struct iovec *iov, int iovcnt, vitastor_io_cb *cb, void *opaque);
    void (*read_bitmap)(vitastor_c *client, uint64_t inode, uint64_t offset, uint64_t len,
                        int with_parents, vitastor_bitmap_cb *cb, void *opaque);
    void (*sync)(vitastor_c *client, vitastor_io_cb *cb, void *opaque);
    void (*watch_inode)(vitastor_c *client, char *image, vitastor_io_cb *cb, void *opaque);
    void (*close_watch)(vitastor_c *client, void *handle);
    uint64_t (*inode_get_size)(void *handle);
    uint64_t (*inode_get_num)(void *handle);
    int (*inode_get_readonly)(void *handle);
    uint32_t (*inode_get_block_size)(vitastor_c *client, uint64_t inode_num);
    uint32_t (*inode_get_bitmap_granularity)(vitastor_c *client, uint64_t inode_num);
} ov_client;

typedef struct ov_image {
    void *watch;
    char *name;
    uint64_t size;
    uint64_t num;
    uint32_t block_size;
    uint32_t granularity;
    int readonly;
} ov_image;

typedef struct {
    uint64_t size;
    uint64_t num;
    uint32_t block_size;
    uint32_t granularity;
    int readonly;
} ov_image_info;

typedef void ov_progress_fn(void *opaque, uint64_t done, uint64_t total);

/* exported */
int ov_abi_version(void);
int ov_client_open(const char *lib_path, const char **options, int options_len, ov_client **client,
                   char *version, size_t version_size, char *err, size_t err_size);
int ov_client_has_symbol(ov_client *client, const char *name);
void ov_client_close(ov_client *client);
int ov_image_open(ov_client *client, const char *name, ov_image **image, ov_image_info *info,
                  char *err, size_t err_size);
void ov_image_close(ov_client *client, ov_image *image);
int64_t ov_copy_fd_to_image(ov_client *client, int fd, uint64_t size, ov_image *dst, int queue_depth,
                            int flags, ov_progress_fn *progress, void *opaque, char *err, size_t err_size);
int64_t ov_copy_image_to_fd(ov_client *client, ov_image *src, uint64_t size, int fd, int queue_depth,
                            int flags, ov_progress_fn *progress, void *opaque, char *err, size_t err_size);
int64_t ov_copy_image_to_image(ov_client *client, ov_image *src, ov_image *dst, int queue_depth,
                               int flags, ov_progress_fn *progress, void *opaque, char *err, size_t err_size);
int64_t ov_layer_bitmap(ov_client *client, ov_image *layer, uint64_t size, uint32_t granularity, uint8_t *out,
                        int queue_depth, char *err, size_t err_size);
int64_t ov_copy_extents_to_fd(ov_client *client, ov_image *src, const uint64_t *extents, uint64_t count, int fd,
                              int queue_depth, ov_progress_fn *progress, void *opaque, char *err, size_t err_size);

static int fail(char *err, size_t err_size, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t err_size, int code, const char *fmt, ...)
{
    if (err && err_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_size, fmt, ap);
        va_end(ap);
    }
    return code > 0 ? -code : code;
}

static uint64_t round_up(uint64_t value, uint64_t align)
{
    return (value + align - 1) / align * align;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

int ov_abi_version(void)
{
    return OV_ABI_VERSION;
}

/* ---------------------------------------------------------------------------------------- */
/* client                                                                                   */

struct symbol {
    const char *name;
    size_t offset;
};

#define SYM(field) { "vitastor_c_" #field, offsetof(ov_client, field) }
static const struct symbol SYMBOLS[] = {
    SYM(create_uring_json), SYM(destroy), SYM(read), SYM(write), SYM(read_bitmap), SYM(sync),
    SYM(watch_inode), SYM(close_watch), SYM(inode_get_size), SYM(inode_get_num),
    SYM(inode_get_readonly), SYM(inode_get_block_size), SYM(inode_get_bitmap_granularity),
    { "vitastor_c_uring_handle_events", offsetof(ov_client, handle_events) },
    { "vitastor_c_uring_wait_events", offsetof(ov_client, wait_events) },
};

/* One pass of the event loop; blocks for the next completion if that pass brought none. */
static void pump(ov_client *c)
{
    uint64_t before = c->events;
    c->handle_events(c->cli);
    if (c->events == before) {
        c->wait_events(c->cli);
        c->handle_events(c->cli);
    }
}

int ov_client_open(const char *lib_path, const char **options, int options_len, ov_client **client,
                   char *version, size_t version_size, char *err, size_t err_size)
{
    char vbuf[64];
    const char **opts;
    ov_client *c;
    size_t i;

    *client = NULL;
    if (options_len < 0 || options_len % 2)
        return fail(err, err_size, EINVAL, "options must come as key/value pairs");
    c = calloc(1, sizeof(*c));
    if (!c)
        return fail(err, err_size, ENOMEM, "out of memory");
    c->dl = dlopen(lib_path, RTLD_NOW | RTLD_LOCAL);
    if (!c->dl) {
        int rc = fail(err, err_size, ENOENT, "cannot load %s: %s", lib_path, dlerror());
        free(c);
        return rc;
    }
    for (i = 0; i < sizeof(SYMBOLS) / sizeof(SYMBOLS[0]); i++) {
        void *fn = dlsym(c->dl, SYMBOLS[i].name);
        if (!fn) {
            int rc = fail(err, err_size, ENOSYS, "%s does not provide %s: not a usable libvitastor_client",
                          lib_path, SYMBOLS[i].name);
            free(c); /* the library stays loaded: unloading C++ code mid-process is not worth the risk */
            return rc;
        }
        memcpy((char *)c + SYMBOLS[i].offset, &fn, sizeof(fn));
    }
    opts = calloc((size_t)options_len + 2, sizeof(*opts));
    if (!opts) {
        free(c);
        return fail(err, err_size, ENOMEM, "out of memory");
    }
    memcpy(opts, options, (size_t)options_len * sizeof(*opts));
    /* the library overwrites the value with its version if the buffer is long enough (>= 2.2.3) */
    memset(vbuf, VERSION_FILL, sizeof(vbuf) - 1);
    vbuf[sizeof(vbuf) - 1] = 0;
    opts[options_len] = "__version_check_buffer";
    opts[options_len + 1] = vbuf;
    c->cli = c->create_uring_json(opts, options_len + 2);
    free(opts);
    if (!c->cli) {
        free(c);
        return fail(err, err_size, EIO, "vitastor_c_create_uring_json failed (is io_uring available?)");
    }
    if (version && version_size)
        snprintf(version, version_size, "%s", vbuf[0] == VERSION_FILL ? "" : vbuf);
    *client = c;
    return 0;
}

int ov_client_has_symbol(ov_client *client, const char *name)
{
    return dlsym(client->dl, name) != NULL;
}

void ov_client_close(ov_client *client)
{
    if (!client)
        return;
    if (client->cli)
        client->destroy(client->cli);
    free(client);
}

/* ---------------------------------------------------------------------------------------- */
/* images                                                                                   */

struct waiter {
    ov_client *c;
    int done;
    long retval;
};

static void on_waiter(void *opaque, long retval)
{
    struct waiter *w = opaque;
    w->retval = retval;
    w->done = 1;
    w->c->events++;
}

int ov_image_open(ov_client *client, const char *name, ov_image **image, ov_image_info *info,
                  char *err, size_t err_size)
{
    struct waiter w = { client, 0, 0 };
    ov_image *img;

    *image = NULL;
    img = calloc(1, sizeof(*img));
    if (!img || !(img->name = strdup(name))) { /* the library keeps the name pointer until ready */
        free(img);
        return fail(err, err_size, ENOMEM, "out of memory");
    }
    client->watch_inode(client->cli, img->name, on_waiter, &w);
    while (!w.done)
        pump(client);
    img->watch = (void *)w.retval;
    img->num = img->watch ? client->inode_get_num(img->watch) : 0;
    if (!img->num) {
        ov_image_close(client, img);
        return fail(err, err_size, ENOENT, "Vitastor image %s does not exist", name);
    }
    img->size = client->inode_get_size(img->watch);
    img->readonly = client->inode_get_readonly(img->watch);
    img->block_size = client->inode_get_block_size(client->cli, img->num);
    img->granularity = client->inode_get_bitmap_granularity(client->cli, img->num);
    if (!img->block_size) {
        uint64_t num = img->num;
        ov_image_close(client, img);
        return fail(err, err_size, EINVAL, "the pool of Vitastor image %s (inode 0x%llx) is unknown",
                    name, (unsigned long long)num);
    }
    if (!img->granularity)
        img->granularity = SECTOR;
    if (img->block_size % img->granularity || img->granularity % SECTOR) {
        ov_image_close(client, img);
        return fail(err, err_size, EINVAL, "Vitastor image %s: block size %u and granularity %u do not fit",
                    name, img->block_size, img->granularity);
    }
    if (info) {
        info->size = img->size;
        info->num = img->num;
        info->block_size = img->block_size;
        info->granularity = img->granularity;
        info->readonly = img->readonly;
    }
    *image = img;
    return 0;
}

void ov_image_close(ov_client *client, ov_image *image)
{
    if (!image)
        return;
    if (image->watch)
        client->close_watch(client->cli, image->watch);
    free(image->name);
    free(image);
}

/* ---------------------------------------------------------------------------------------- */
/* the copy loop                                                                            */

enum src_kind { SRC_FILE, SRC_STREAM, SRC_IMAGE };
enum dst_kind { DST_FILE, DST_STREAM, DST_IMAGE };
enum slot_state { FREE, BITMAP, BITMAP_DONE, READING, READ_DONE, READY, WRITING, WRITE_DONE };

struct copy;

struct slot {
    struct copy *cp;
    enum slot_state state;
    uint64_t seq;
    uint64_t off;  /* source offset of the block */
    uint64_t len;  /* source bytes in the block */
    uint8_t *buf;
    long retval;   /* the first error of the block's operations */
    uint8_t *bitmap;
    int pending;   /* writes in flight */
};

struct copy {
    ov_client *c;
    enum src_kind src_kind;
    enum dst_kind dst_kind;
    int src_fd, dst_fd;
    int src_holes;     /* SEEK_DATA works on the source file */
    int dst_truncate;  /* regular file target: set its size at the end */
    ov_image *src, *dst;
    uint64_t total;    /* source bytes to copy */
    uint64_t block;    /* copy unit: an object of the image side */
    uint64_t unit;     /* zero detection and write alignment */
    uint64_t next_off;
    const uint64_t *extents; /* (offset, length) pairs to copy instead of [0, total), in order */
    uint64_t n_extents, extent;
    uint64_t next_seq, sink_seq;
    int eof;
    int write_zeroes;
    struct slot *slots;
    int nslots;
    int busy;          /* slots not FREE */
    int inflight;      /* library operations not yet called back */
    uint64_t done, written;
    int error;         /* negative errno once failed */
    char *err;
    size_t err_size;
    ov_progress_fn *progress;
    void *opaque;
};

static void copy_fail(struct copy *cp, int code, const char *what, uint64_t off)
{
    if (cp->error)
        return;
    cp->error = code > 0 ? -code : code;
    fail(cp->err, cp->err_size, cp->error, "%s at offset %llu: %s", what, (unsigned long long)off,
         strerror(-cp->error));
}

static void report(struct copy *cp)
{
    if (cp->progress)
        cp->progress(cp->opaque, cp->done, cp->total);
}

static int all_zero(const uint8_t *buf, uint64_t len)
{
    return len == 0 || (buf[0] == 0 && memcmp(buf, buf + 1, len - 1) == 0);
}

static void finish(struct slot *s)
{
    struct copy *cp = s->cp;
    if (s->bitmap) {
        free(s->bitmap);
        s->bitmap = NULL;
    }
    s->state = FREE;
    cp->busy--;
    if (!cp->error) {
        cp->done += s->len;
        if (cp->dst_kind == DST_STREAM)
            cp->sink_seq++;
        report(cp);
    }
}

static void on_bitmap(void *opaque, long retval, uint8_t *bitmap)
{
    struct slot *s = opaque;
    s->retval = retval;
    s->bitmap = bitmap;
    s->state = BITMAP_DONE;
    s->cp->inflight--;
    s->cp->c->events++;
}

static void on_read(void *opaque, long retval, uint64_t version)
{
    struct slot *s = opaque;
    (void)version;
    s->retval = retval;
    s->state = READ_DONE;
    s->cp->inflight--;
    s->cp->c->events++;
}

static void on_write(void *opaque, long retval)
{
    struct slot *s = opaque;
    if (retval < 0 && s->retval >= 0)
        s->retval = retval;
    else if (retval > 0)
        s->cp->written += (uint64_t)retval;
    s->cp->inflight--;
    s->cp->c->events++;
    if (--s->pending == 0)
        s->state = WRITE_DONE;
}

static int read_full(int fd, uint8_t *buf, uint64_t len, uint64_t *got)
{
    *got = 0;
    while (*got < len) {
        ssize_t n = read(fd, buf + *got, len - *got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        *got += (uint64_t)n;
    }
    return 0;
}

static int pread_full(int fd, uint8_t *buf, uint64_t len, uint64_t off)
{
    uint64_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, buf + got, len - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break; /* the file shrank: the rest reads as zeros */
        got += (uint64_t)n;
    }
    return 0;
}

static int write_full(int fd, const uint8_t *buf, uint64_t len, int64_t off)
{
    uint64_t put = 0;
    while (put < len) {
        ssize_t n = off < 0 ? write(fd, buf + put, len - put)
                            : pwrite(fd, buf + put, len - put, (off_t)((uint64_t)off + put));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        put += (uint64_t)n;
    }
    return 0;
}

/* Skip the holes of a regular source file: move next_off to the block holding the next data. */
static void skip_file_holes(struct copy *cp)
{
    off_t data;
    uint64_t start;
    if (!cp->src_holes || cp->next_off >= cp->total)
        return;
    data = lseek(cp->src_fd, (off_t)cp->next_off, SEEK_DATA);
    if (data < 0) {
        if (errno == ENXIO) { /* only a hole up to the end */
            cp->done += cp->total - cp->next_off;
            cp->next_off = cp->total;
        } else {
            cp->src_holes = 0; /* no SEEK_DATA here: read everything */
        }
        return;
    }
    start = (uint64_t)data - (uint64_t)data % cp->block;
    if (start > cp->next_off) {
        start = min_u64(start, cp->total);
        cp->done += start - cp->next_off;
        cp->next_off = start;
    }
}

/* The end of the range next_off is in (moving next_off to the next extent when the copy has
   extents); 0 at the end of the copy. */
static uint64_t range_end(struct copy *cp)
{
    if (!cp->extents)
        return cp->next_off < cp->total ? cp->total : 0;
    while (cp->extent < cp->n_extents &&
           cp->next_off >= cp->extents[2 * cp->extent] + cp->extents[2 * cp->extent + 1]) {
        cp->extent++;
        if (cp->extent < cp->n_extents)
            cp->next_off = cp->extents[2 * cp->extent];
    }
    return cp->extent < cp->n_extents ? cp->extents[2 * cp->extent] + cp->extents[2 * cp->extent + 1] : 0;
}

/* Start the next block in a free slot; returns 1 if one was started. */
static int start_block(struct copy *cp, struct slot *s)
{
    uint64_t got, end;
    int rc;

    if (cp->src_kind == SRC_FILE)
        skip_file_holes(cp);
    end = range_end(cp);
    if (!end) {
        cp->eof = 1;
        return 0;
    }
    s->off = cp->next_off;
    s->len = min_u64(cp->block, end - s->off);
    s->seq = cp->next_seq;
    s->retval = 0;
    s->pending = 0;
    switch (cp->src_kind) {
    case SRC_FILE:
        memset(s->buf, 0, round_up(s->len, cp->unit));
        rc = pread_full(cp->src_fd, s->buf, s->len, s->off);
        if (rc < 0) {
            copy_fail(cp, rc, "reading the file", s->off);
            return 0;
        }
        s->state = READY;
        break;
    case SRC_STREAM:
        memset(s->buf, 0, round_up(s->len, cp->unit));
        rc = read_full(cp->src_fd, s->buf, s->len, &got);
        if (rc < 0) {
            copy_fail(cp, rc, "reading the input", s->off);
            return 0;
        }
        if (got < s->len) { /* end of the stream */
            cp->eof = 1;
            cp->total = s->off + got;
            if (!got)
                return 0;
            s->len = got;
        }
        s->state = READY;
        break;
    case SRC_IMAGE:
        s->state = BITMAP;
        break;
    }
    cp->next_off += s->len;
    cp->next_seq++;
    cp->busy++;
    if (s->state == BITMAP) {
        cp->inflight++;
        cp->c->read_bitmap(cp->c->cli, cp->src->num, s->off, round_up(s->len, cp->src->granularity), 1,
                           on_bitmap, s);
    }
    return 1;
}

/* A bitmap arrived: read the written part of the block, or treat it as zeros. */
static void after_bitmap(struct copy *cp, struct slot *s)
{
    uint64_t gran = cp->src->granularity, bits = round_up(s->len, gran) / gran, i, first = bits, last = 0;
    struct iovec iov;

    if (s->retval < 0 || !s->bitmap) {
        copy_fail(cp, s->retval < 0 ? (int)s->retval : EIO, "reading the allocation bitmap", s->off);
        finish(s);
        return;
    }
    for (i = 0; i < bits && i < (uint64_t)s->retval; i++) {
        if (s->bitmap[i / 8] & (1u << (i % 8))) {
            if (first == bits)
                first = i;
            last = i;
        }
    }
    free(s->bitmap);
    s->bitmap = NULL;
    memset(s->buf, 0, round_up(s->len, cp->unit));
    if (first == bits) { /* nothing written in this block or below it */
        s->state = READY;
        return;
    }
    iov.iov_base = s->buf + first * gran;
    iov.iov_len = (last + 1 - first) * gran;
    s->state = READING;
    cp->inflight++;
    cp->c->read(cp->c->cli, cp->src->num, s->off + first * gran, iov.iov_len, &iov, 1, on_read, s);
}

/* Hand a block with its data to the target. */
static void sink(struct copy *cp, struct slot *s)
{
    uint64_t wlen, pos, end;
    int rc;

    if (cp->dst_kind == DST_STREAM) {
        rc = write_full(cp->dst_fd, s->buf, s->len, -1);
        if (rc < 0)
            copy_fail(cp, rc, "writing the output", s->off);
        else
            cp->written += s->len;
        finish(s);
        return;
    }
    /* images take whole granules: pad the tail, but never beyond the image */
    wlen = cp->dst_kind == DST_IMAGE ? min_u64(round_up(s->len, cp->unit), cp->dst->size - s->off) : s->len;
    s->state = WRITING;
    s->pending = 1; /* held until every run is submitted: callbacks may run inside the submit */
    for (pos = 0; pos < wlen && !cp->error; pos = end) {
        uint64_t n;
        while (!cp->write_zeroes && pos < wlen && all_zero(s->buf + pos, min_u64(cp->unit, wlen - pos)))
            pos += cp->unit;
        if (pos >= wlen)
            break;
        end = pos;
        while (end < wlen && (cp->write_zeroes || !all_zero(s->buf + end, min_u64(cp->unit, wlen - end))))
            end += cp->unit;
        end = min_u64(end, wlen);
        n = end - pos;
        if (cp->dst_kind == DST_FILE) {
            rc = write_full(cp->dst_fd, s->buf + pos, n, (int64_t)(s->off + pos));
            if (rc < 0)
                copy_fail(cp, rc, "writing the file", s->off + pos);
            else
                cp->written += n;
        } else {
            struct iovec iov = { s->buf + pos, n };
            s->pending++;
            cp->inflight++;
            cp->c->write(cp->c->cli, cp->dst->num, s->off + pos, n, 0, &iov, 1, on_write, s);
        }
    }
    if (--s->pending == 0)
        s->state = WRITE_DONE;
}

/* Move every slot on as far as it goes without waiting; returns how many moved. */
static int advance(struct copy *cp)
{
    int moved = 0, i, again = 1;
    while (again) {
        again = 0;
        for (i = 0; i < cp->nslots; i++) {
            struct slot *s = &cp->slots[i];
            switch (s->state) {
            case BITMAP_DONE:
                if (cp->error)
                    finish(s);
                else
                    after_bitmap(cp, s);
                break;
            case READ_DONE:
                if (s->retval < 0)
                    copy_fail(cp, (int)s->retval, "reading the image", s->off);
                if (cp->error)
                    finish(s);
                else
                    s->state = READY;
                break;
            case READY:
                if (cp->error)
                    finish(s);
                else if (cp->dst_kind != DST_STREAM || s->seq == cp->sink_seq)
                    sink(cp, s);
                else
                    continue;
                break;
            case WRITE_DONE:
                if (s->retval < 0)
                    copy_fail(cp, (int)s->retval, "writing the image", s->off);
                finish(s);
                break;
            default:
                continue;
            }
            moved++;
            again = 1;
        }
    }
    return moved;
}

static int fill(struct copy *cp)
{
    int started = 0, i;
    for (i = 0; i < cp->nslots && !cp->eof && !cp->error; i++)
        if (cp->slots[i].state == FREE)
            started += start_block(cp, &cp->slots[i]);
    return started;
}

static int64_t run_copy(struct copy *cp, int queue_depth)
{
    uint64_t bufsize;
    int i;

    if (queue_depth < 1)
        queue_depth = 1;
    if (queue_depth > MAX_QUEUE_DEPTH)
        queue_depth = MAX_QUEUE_DEPTH;
    bufsize = round_up(cp->block, cp->unit);
    while (queue_depth > 1 && (uint64_t)queue_depth * bufsize > MAX_BUFFERS)
        queue_depth--;
    cp->slots = calloc((size_t)queue_depth, sizeof(*cp->slots));
    if (!cp->slots)
        return fail(cp->err, cp->err_size, ENOMEM, "out of memory");
    for (i = 0; i < queue_depth; i++) {
        cp->slots[i].cp = cp;
        if (posix_memalign((void **)&cp->slots[i].buf, SECTOR, bufsize)) {
            copy_fail(cp, ENOMEM, "allocating buffers", 0);
            break;
        }
        cp->nslots++;
    }
    report(cp);
    while (!cp->error || cp->busy) {
        int moved = cp->error ? 0 : fill(cp);
        moved += advance(cp);
        if (!cp->busy && (cp->eof || cp->error))
            break;
        if (!moved) {
            if (!cp->inflight) {
                copy_fail(cp, EIO, "internal error: the copy stalled", cp->next_off);
                break;
            }
            pump(cp->c);
        }
    }
    if (!cp->error && cp->dst_kind == DST_IMAGE && cp->written) {
        struct waiter w = { cp->c, 0, 0 };
        cp->c->sync(cp->c->cli, on_waiter, &w);
        while (!w.done)
            pump(cp->c);
        if (w.retval < 0)
            copy_fail(cp, (int)w.retval, "syncing the image", cp->total);
    }
    if (!cp->error && cp->dst_truncate) {
        if (ftruncate(cp->dst_fd, (off_t)cp->total) < 0)
            copy_fail(cp, errno, "setting the file size", cp->total);
        else if (fdatasync(cp->dst_fd) < 0)
            copy_fail(cp, errno, "syncing the file", cp->total);
    }
    for (i = 0; i < cp->nslots; i++)
        free(cp->slots[i].buf);
    free(cp->slots);
    if (!cp->error) {
        cp->done = cp->total;
        report(cp);
    }
    return cp->error ? cp->error : (int64_t)cp->written;
}

static int check_target(struct copy *cp, ov_image *dst)
{
    if (dst->readonly)
        return fail(cp->err, cp->err_size, EROFS, "Vitastor image %s is readonly", dst->name);
    if (round_up(cp->total, SECTOR) > dst->size)
        return fail(cp->err, cp->err_size, EFBIG, "%llu bytes do not fit in Vitastor image %s of %llu bytes",
                    (unsigned long long)cp->total, dst->name, (unsigned long long)dst->size);
    return 0;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/* The fields every copy direction sets the same way. */
static void copy_init(struct copy *cp, ov_client *client, int flags, ov_progress_fn *progress, void *opaque,
                      char *err, size_t err_size)
{
    cp->c = client;
    cp->err = err;
    cp->err_size = err_size;
    cp->progress = progress;
    cp->opaque = opaque;
    cp->write_zeroes = flags & OV_WRITE_ZEROES;
}

/* A copy that reads `src`: one object at a time, its granules. */
static void copy_from_image(struct copy *cp, ov_image *src)
{
    cp->src = src;
    cp->src_kind = SRC_IMAGE;
    cp->block = src->block_size;
    cp->unit = max_u64(src->granularity, SECTOR);
}

int64_t ov_copy_fd_to_image(ov_client *client, int fd, uint64_t size, ov_image *dst, int queue_depth,
                            int flags, ov_progress_fn *progress, void *opaque, char *err, size_t err_size)
{
    struct copy cp = { 0 };
    struct stat st;
    int rc;

    copy_init(&cp, client, flags, progress, opaque, err, err_size);
    cp.src_fd = fd;
    cp.dst = dst;
    cp.dst_kind = DST_IMAGE;
    cp.total = size;
    cp.block = dst->block_size;
    cp.unit = max_u64(dst->granularity, SECTOR);
    if (fstat(fd, &st) < 0)
        return fail(err, err_size, errno, "cannot stat the input: %s", strerror(errno));
    cp.src_kind = S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) ? SRC_FILE : SRC_STREAM;
    cp.src_holes = S_ISREG(st.st_mode);
    if ((rc = check_target(&cp, dst)) < 0)
        return rc;
    return run_copy(&cp, queue_depth);
}

int64_t ov_copy_image_to_fd(ov_client *client, ov_image *src, uint64_t size, int fd, int queue_depth,
                            int flags, ov_progress_fn *progress, void *opaque, char *err, size_t err_size)
{
    struct copy cp = { 0 };
    struct stat st;

    copy_init(&cp, client, flags, progress, opaque, err, err_size);
    copy_from_image(&cp, src);
    cp.dst_fd = fd;
    cp.total = size;
    if (size > src->size)
        return fail(err, err_size, EINVAL, "Vitastor image %s has only %llu bytes", src->name,
                    (unsigned long long)src->size);
    if (fstat(fd, &st) < 0)
        return fail(err, err_size, errno, "cannot stat the output: %s", strerror(errno));
    if (S_ISREG(st.st_mode)) {
        /* rewritten from offset 0: empty it first, so skipped zeros read back as holes */
        cp.dst_kind = DST_FILE;
        cp.dst_truncate = 1;
        if (!cp.write_zeroes && ftruncate(fd, 0) < 0)
            return fail(err, err_size, errno, "cannot truncate the output: %s", strerror(errno));
    } else if (S_ISBLK(st.st_mode)) {
        cp.dst_kind = DST_FILE;
        cp.write_zeroes = 1;
    } else {
        cp.dst_kind = DST_STREAM;
    }
    return run_copy(&cp, queue_depth);
}

int64_t ov_copy_image_to_image(ov_client *client, ov_image *src, ov_image *dst, int queue_depth,
                               int flags, ov_progress_fn *progress, void *opaque, char *err, size_t err_size)
{
    struct copy cp = { 0 };
    int rc;

    copy_init(&cp, client, flags, progress, opaque, err, err_size);
    copy_from_image(&cp, src);
    cp.dst = dst;
    cp.dst_kind = DST_IMAGE;
    cp.total = src->size;
    cp.unit = max_u64(cp.unit, dst->granularity);
    if (src->num == dst->num)
        return fail(err, err_size, EINVAL, "cannot copy Vitastor image %s onto itself", src->name);
    if ((rc = check_target(&cp, dst)) < 0)
        return rc;
    return run_copy(&cp, queue_depth);
}

/* ---------------------------------------------------------------------------------------- */
/* layer bitmaps and extents: what backup increments are made of                            */

struct bitmap_req {
    struct waiter w;
    uint64_t off, len;
    uint8_t *bitmap;
    int busy;
};

static void on_layer_bitmap(void *opaque, long retval, uint8_t *bitmap)
{
    struct bitmap_req *r = opaque;
    r->bitmap = bitmap;
    on_waiter(&r->w, retval);
}

/* OR into out (one bit per granule, LSB first) the granules that `layer` itself holds in
   [0, size): READ_BITMAP without parents, so no data is read. Returns the granules set. */
int64_t ov_layer_bitmap(ov_client *client, ov_image *layer, uint64_t size, uint32_t granularity, uint8_t *out,
                        int queue_depth, char *err, size_t err_size)
{
    struct bitmap_req reqs[MAX_QUEUE_DEPTH];
    uint64_t chunk, next = 0, set = 0, end = min_u64(size, layer->size);
    int i, busy = 0, error = 0;

    if (granularity != layer->granularity)
        return fail(err, err_size, EINVAL, "Vitastor layer %s has bitmap granularity %u, not %u", layer->name,
                    layer->granularity, granularity);
    if (queue_depth < 1 || queue_depth > MAX_QUEUE_DEPTH)
        queue_depth = MAX_QUEUE_DEPTH;
    chunk = (uint64_t)layer->block_size * 256;
    memset(reqs, 0, sizeof(reqs));
    while (busy || (next < end && !error)) {
        int moved = 0;
        for (i = 0; i < queue_depth; i++) {
            struct bitmap_req *r = &reqs[i];
            if (r->busy && r->w.done) {
                uint64_t bits = r->len / granularity, b, first = r->off / granularity;
                if (r->w.retval < 0 && !error)
                    error = fail(err, err_size, (int)r->w.retval, "reading the bitmap of %s at offset %llu: %s",
                                 layer->name, (unsigned long long)r->off, strerror((int)-r->w.retval));
                for (b = 0; r->w.retval >= 0 && r->bitmap && b < bits && b < (uint64_t)r->w.retval; b++) {
                    if (r->bitmap[b / 8] & (1u << (b % 8))) {
                        out[(first + b) / 8] |= (uint8_t)(1u << ((first + b) % 8));
                        set++;
                    }
                }
                free(r->bitmap);
                r->bitmap = NULL;
                r->busy = 0;
                busy--;
                moved = 1;
            }
            if (!r->busy && next < end && !error) {
                r->off = next;
                r->len = round_up(min_u64(chunk, end - next), granularity);
                next += r->len;
                r->busy = 1;
                r->w.c = client;
                r->w.done = 0;
                busy++;
                moved = 1;
                client->read_bitmap(client->cli, layer->num, r->off, r->len, 0, on_layer_bitmap, r);
            }
        }
        if (!moved && busy)
            pump(client);
    }
    return error ? error : (int64_t)set;
}

/* Stream the bytes `src` reads (through its parents) in the given (offset, length) extents,
   in order, to the stream fd: the changed parts of a disk, for a backup increment. */
int64_t ov_copy_extents_to_fd(ov_client *client, ov_image *src, const uint64_t *extents, uint64_t count, int fd,
                              int queue_depth, ov_progress_fn *progress, void *opaque, char *err, size_t err_size)
{
    struct copy cp = { 0 };
    uint64_t i;

    copy_init(&cp, client, 0, progress, opaque, err, err_size);
    copy_from_image(&cp, src);
    cp.dst_fd = fd;
    cp.dst_kind = DST_STREAM;
    cp.extents = extents;
    cp.n_extents = count;
    for (i = 0; i < count; i++) {
        uint64_t off = extents[2 * i], len = extents[2 * i + 1];
        if (off % cp.unit || len % cp.unit || !len || off + len > src->size ||
            (i && off < extents[2 * i - 2] + extents[2 * i - 1]))
            return fail(err, err_size, EINVAL, "extent %llu of %s is not aligned, ordered and inside the image",
                        (unsigned long long)i, src->name);
        cp.total += extents[2 * i + 1];
    }
    if (count)
        cp.next_off = extents[0];
    return run_copy(&cp, queue_depth);
}
