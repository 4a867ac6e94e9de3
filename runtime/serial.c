/*
 * serial.c - what the two checkpoint formats share (checkpoint.c for the
 * optimizer, sched_io.c for schedulers): little-endian fields written to
 * or read from memory with every length checked, FNV-1a 64, and files
 * written atomically and read whole.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rt.h"

/* ---- writing to memory -------------------------------------------------- */

void rt_put(rt_out *o, const void *p, size_t n)
{
    if (o->buf && o->len + n <= o->cap)
        memcpy(o->buf + o->len, p, n);
    o->len += n;
}

void rt_put_u32(rt_out *o, uint32_t v) { rt_put(o, &v, 4); }
void rt_put_u64(rt_out *o, uint64_t v) { rt_put(o, &v, 8); }
void rt_put_f64(rt_out *o, double v) { rt_put(o, &v, 8); }

void rt_put_str(rt_out *o, const char *s)
{
    rt_put_u32(o, (uint32_t)strlen(s));
    rt_put(o, s, strlen(s));
}

/* appends the checksum of everything written so far */
void rt_put_seal(rt_out *o)
{
    rt_put_u64(o, o->buf ? cg_fnv(CG_FNV_INIT, o->buf, o->len) : 0);
}

/* ---- reading from memory ------------------------------------------------ */

const void *rt_take(rt_in *r, size_t n)
{
    if (r->bad || n > r->len - r->pos) {
        r->bad = 1;
        return NULL;
    }
    const void *p = r->p + r->pos;
    r->pos += n;
    return p;
}

/* n bytes into v, or zeros past the end (r->bad says so) */
static void get_bytes(rt_in *r, void *v, size_t n)
{
    const void *p = rt_take(r, n);
    if (p)
        memcpy(v, p, n);
}

uint32_t rt_get_u32(rt_in *r)
{
    uint32_t v = 0;
    get_bytes(r, &v, sizeof v);
    return v;
}

uint64_t rt_get_u64(rt_in *r)
{
    uint64_t v = 0;
    get_bytes(r, &v, sizeof v);
    return v;
}

double rt_get_f64(rt_in *r)
{
    double v = 0;
    get_bytes(r, &v, sizeof v);
    return v;
}

int rt_get_str_eq(rt_in *r, const char *want)
{
    uint32_t n = rt_get_u32(r);
    const char *p = rt_take(r, n);
    return p && n == strlen(want) && memcmp(p, want, n) == 0;
}

int rt_sealed(const void *buf, size_t len)
{
    uint64_t sum;
    if (len < 8)
        return 0;
    memcpy(&sum, (const unsigned char *)buf + len - 8, 8);
    return cg_fnv(CG_FNV_INIT, buf, len - 8) == sum ||
           cg_fnv(CG_FNV_INIT_OLD, buf, len - 8) == sum; /* jopt < issue 16 */
}

/* ---- files -------------------------------------------------------------- */

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* temporary file, fsync, rename, fsync of the folder: a crash or a failed
 * write leaves the previous file as it was */
int rt_write_atomic(jopt_ctx *ctx, const char *fn, const char *path,
                    const void *buf, size_t len)
{
    size_t plen = strlen(path);
    /* both names now: after the rename, running out of memory would leave
     * a new file behind an error */
    char *tmp = cg_malloc(plen + 32), *dir = cg_strdup(path);
    if (!tmp || !dir) {
        cg_free(tmp);
        cg_free(dir);
        return rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    }
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    int rc, fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const char *what = "create";
    if (fd < 0)
        goto fail;
    what = "write";
    if (write_all(fd, buf, len) != 0)
        goto fail;
    what = "fsync";
    if (fsync(fd) != 0)
        goto fail;
    what = "close";
    int c = close(fd);
    fd = -1;
    if (c != 0)
        goto fail;
    what = "rename";
    if (rename(tmp, path) != 0)
        goto fail;
    cg_free(tmp);
    /* make the rename itself durable; the new file is in place now, so a
     * failure here says so (EINVAL: a folder that cannot be synced) */
    char *slash = strrchr(dir, '/');
    const char *d = slash ? (slash == dir ? "/" : (*slash = 0, dir)) : ".";
    int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int bad = dfd < 0 || (fsync(dfd) != 0 && errno != EINVAL);
    int e = errno;
    if (dfd >= 0)
        close(dfd);
    rc = bad ? rt_fail(ctx, JOPT_EINVAL, "%s: '%s' was written and renamed "
                       "into place, but syncing its folder '%s' failed: %s (the "
                       "file may not survive a crash)", fn, path, d,
                       strerror(e))
             : JOPT_OK;
    cg_free(dir);
    return rc;
fail:
    rc = rt_fail(ctx, JOPT_EINVAL, "%s: cannot %s '%s': %s (the previous "
                 "file, if any, is unchanged)", fn, what,
                 strcmp(what, "rename") ? tmp : path, strerror(errno));
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    cg_free(tmp);
    cg_free(dir);
    return rc;
}

/* never more than the file holds, whatever its lengths say */
int rt_read_file(jopt_ctx *ctx, const char *fn, const char *path,
                 unsigned char **out, size_t *out_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO: no wait */
    struct stat st;
    int e = fd < 0 ? errno : fstat(fd, &st) != 0 ? errno : 0;
    if (e || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        return rt_fail(ctx, JOPT_EINVAL, "%s: cannot read '%s': %s", fn, path,
                       e ? strerror(e) : S_ISDIR(st.st_mode) ? strerror(EISDIR)
                                                              : "not a regular file");
    }
    size_t len = (size_t)st.st_size;
    unsigned char *buf = cg_malloc(len ? len : 1);
    if (!buf) {
        close(fd);
        return rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory reading '%s'", fn,
                       path);
    }
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (got != len) {
        cg_free(buf);
        return rt_fail(ctx, JOPT_EINVAL, "%s: cannot read '%s'", fn, path);
    }
    *out = buf;
    *out_len = len;
    return JOPT_OK;
}
