/* Writing and reading .mtlsnap files (layout in docs/snapshot-format.md). The writer serialises in
 * two passes over the same code: one that only counts bytes (the header records the total length,
 * so truncation is caught before anything is parsed) and one that writes them, updating a zlib
 * CRC32 on the way. The reader loads the whole file and checks everything before trusting a size. */
#include "core/snapshot.h"

#include "core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static const unsigned char snapshot_magic[8] = {'M', 'T', 'L', 'S', 'N', 'A', 'P', '\0'};

/* Header: magic, version u32, flags u32, total length u64. */
#define HEADER_BYTES 24
#define SECTION_HEADER_BYTES 16
#define CRC_BYTES 4
#define MAX_NAME_BYTES 4096

#define TAG_PARAMS "PARM"
#define TAG_HISTORY "HIST"
#define TAG_SOLVER "SOLV"
#define TAG_RNGS "RNGS"
#define TAG_LAYER_STATES "LAYS"

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

/* ------------------------------------------------------------------ writer */

typedef struct writer {
    FILE *f;        /* NULL: counting pass */
    uint64_t bytes;
    uLong crc;
    int failed;
} writer;

static void put_bytes(writer *w, const void *p, size_t n)
{
    if (w->failed || n == 0)
        return;
    w->bytes += n;
    if (!w->f)
        return;
    /* zlib takes uInt lengths: feed large buffers in pieces */
    const unsigned char *b = p;
    for (size_t done = 0; done < n;) {
        size_t piece = n - done > (1u << 30) ? (1u << 30) : n - done;
        w->crc = crc32(w->crc, b + done, (uInt)piece);
        done += piece;
    }
    if (fwrite(p, 1, n, w->f) != n)
        w->failed = 1;
}

static void put_u32(writer *w, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    put_bytes(w, b, 4);
}

static void put_u64(writer *w, uint64_t v)
{
    put_u32(w, (uint32_t)v);
    put_u32(w, (uint32_t)(v >> 32));
}

static void put_floats(writer *w, const float *x, int64_t n)
{
    if (host_is_little_endian()) {
        put_bytes(w, x, (size_t)n * sizeof(float));
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        put_u32(w, u);
    }
}

static void put_string(writer *w, const char *s)
{
    size_t n = strlen(s);
    put_u32(w, (uint32_t)n);
    put_bytes(w, s, n);
}

static void put_array(writer *w, const mtl_snapshot_array *a)
{
    put_string(w, a->name);
    put_u32(w, (uint32_t)a->ndim);
    for (int i = 0; i < a->ndim; i++)
        put_u32(w, (uint32_t)a->shape[i]);
    put_u64(w, (uint64_t)a->count);
    put_floats(w, a->data, a->count);
}

static uint64_t array_bytes(const mtl_snapshot_array *a)
{
    return 4 + strlen(a->name) + 4 + 4 * (uint64_t)a->ndim + 8 + 4 * (uint64_t)a->count;
}

static void section_begin(writer *w, const char *tag, uint64_t payload)
{
    put_bytes(w, tag, 4);
    put_u32(w, 0); /* reserved */
    put_u64(w, payload);
}

static uint64_t params_payload(const mtl_snapshot *s)
{
    uint64_t n = 4;
    for (int i = 0; i < s->n_params; i++)
        n += array_bytes(&s->params[i]);
    return n;
}

static uint64_t history_payload(const mtl_snapshot_state *st)
{
    uint64_t n = 8;
    for (int i = 0; i < st->n_slots; i++)
        n += array_bytes(&st->history[i]);
    return n;
}

static uint64_t solver_payload(const mtl_snapshot_state *st)
{
    return 8 + 4 + strlen(st->solver_type) + 8 + 8 + 8 + 4 + 4 * (uint64_t)st->window.count;
}

static uint64_t layer_states_payload(const mtl_snapshot_state *st)
{
    uint64_t n = 4;
    for (int i = 0; i < st->n_layer_states; i++)
        n += 4 + strlen(st->layer_states[i].name) + 8 + st->layer_states[i].size;
    return n;
}

static void write_body(writer *w, const mtl_snapshot *s, uint64_t total)
{
    put_bytes(w, snapshot_magic, sizeof(snapshot_magic));
    put_u32(w, MTL_SNAPSHOT_VERSION);
    put_u32(w, 0); /* flags */
    put_u64(w, total);

    section_begin(w, TAG_PARAMS, params_payload(s));
    put_u32(w, (uint32_t)s->n_params);
    for (int i = 0; i < s->n_params; i++)
        put_array(w, &s->params[i]);

    if (!s->has_state)
        return;
    const mtl_snapshot_state *st = &s->state;
    section_begin(w, TAG_SOLVER, solver_payload(st));
    put_u64(w, (uint64_t)st->iter);
    put_string(w, st->solver_type);
    put_u64(w, (uint64_t)st->window_size);
    put_u64(w, (uint64_t)st->window_fill);
    put_u64(w, (uint64_t)st->window_pos);
    put_u32(w, (uint32_t)st->window_width);
    put_floats(w, st->window.data, st->window.count);

    section_begin(w, TAG_HISTORY, history_payload(st));
    put_u32(w, (uint32_t)st->n_history);
    put_u32(w, (uint32_t)st->n_slots);
    for (int i = 0; i < st->n_slots; i++)
        put_array(w, &st->history[i]);

    section_begin(w, TAG_RNGS, 4 + 16 * (uint64_t)st->n_rngs);
    put_u32(w, (uint32_t)st->n_rngs);
    for (int i = 0; i < st->n_rngs; i++)
        for (int k = 0; k < 4; k++)
            put_u32(w, st->rngs[i].s[k]);

    if (st->n_layer_states == 0)
        return;
    section_begin(w, TAG_LAYER_STATES, layer_states_payload(st));
    put_u32(w, (uint32_t)st->n_layer_states);
    for (int i = 0; i < st->n_layer_states; i++) {
        put_string(w, st->layer_states[i].name);
        put_u64(w, st->layer_states[i].size);
        put_bytes(w, st->layer_states[i].bytes, (size_t)st->layer_states[i].size);
    }
}

static void sync_directory_of(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        fsync(fd); /* best effort: makes the rename itself durable */
        close(fd);
    }
}

mtl_status mtl_snapshot_write(const char *path, const mtl_snapshot *snap, mtl_error *err)
{
    if (!path || !snap)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "mtl_snapshot_write: path or snapshot is NULL");
    for (int i = 0; i < snap->n_params; i++)
        if (strlen(snap->params[i].name) > MAX_NAME_BYTES)
            return mtl_fail(err, MTL_ERR_ARGUMENT, "snapshot '%s': parameter name longer than %d bytes", path,
                            MAX_NAME_BYTES);

    writer counter = {0};
    write_body(&counter, snap, 0);
    uint64_t total = counter.bytes + CRC_BYTES;

    size_t tmp_len = strlen(path) + 5;
    char *tmp = malloc(tmp_len);
    if (!tmp)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory writing snapshot '%s'", path);
    snprintf(tmp, tmp_len, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        mtl_status st = mtl_fail(err, MTL_ERR_IO, "cannot write snapshot '%s': %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    writer w = {.f = f, .crc = crc32(0L, Z_NULL, 0)};
    write_body(&w, snap, total);
    uint32_t crc = (uint32_t)w.crc;
    unsigned char crc_bytes[4] = {(unsigned char)crc, (unsigned char)(crc >> 8), (unsigned char)(crc >> 16),
                                  (unsigned char)(crc >> 24)};
    int ok = !w.failed && fwrite(crc_bytes, 1, 4, f) == 4 && w.bytes + CRC_BYTES == total;
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int saved = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    if (!ok) {
        remove(tmp);
        free(tmp);
        return mtl_fail(err, MTL_ERR_IO, "cannot write snapshot '%s': %s", path,
                        saved ? strerror(saved) : "short write");
    }
    if (rename(tmp, path) != 0) {
        saved = errno;
        remove(tmp);
        free(tmp);
        return mtl_fail(err, MTL_ERR_IO, "cannot rename '%s.tmp' to '%s': %s", path, path, strerror(saved));
    }
    free(tmp);
    sync_directory_of(path);
    return MTL_OK;
}

/* ------------------------------------------------------------------ reader */

typedef struct reader {
    const unsigned char *b;
    size_t pos, end;   /* end: the current section's end */
    const char *path;
    const char *section;
    mtl_error *err;
} reader;

/* "snapshot 'p' is corrupt: section 'PARM' at byte 120: <problem>[ <what>]" */
static mtl_status corrupt(const reader *r, const char *problem, const char *what)
{
    return mtl_fail(r->err, MTL_ERR_CORRUPT, "snapshot '%s' is corrupt: section '%s' at byte %zu: %s%s%s", r->path,
                    r->section, r->pos, problem, what ? " " : "", what ? what : "");
}

static mtl_status need(reader *r, uint64_t n, const char *what)
{
    if (n > r->end - r->pos)
        return corrupt(r, "runs past the end of its section reading", what);
    return MTL_OK;
}

static uint32_t peek_u32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t peek_u64(const unsigned char *b) { return (uint64_t)peek_u32(b) | (uint64_t)peek_u32(b + 4) << 32; }

static mtl_status get_u32(reader *r, uint32_t *v, const char *what)
{
    MTL_TRY(need(r, 4, what));
    *v = peek_u32(r->b + r->pos);
    r->pos += 4;
    return MTL_OK;
}

static mtl_status get_u64(reader *r, uint64_t *v, const char *what)
{
    MTL_TRY(need(r, 8, what));
    *v = peek_u64(r->b + r->pos);
    r->pos += 8;
    return MTL_OK;
}

static mtl_status get_string(reader *r, char **out, const char *what)
{
    uint32_t n;
    MTL_TRY(get_u32(r, &n, what));
    if (n > MAX_NAME_BYTES)
        return corrupt(r, "implausible string length for", what);
    MTL_TRY(need(r, n, what));
    char *s = malloc((size_t)n + 1);
    if (!s)
        return mtl_fail(r->err, MTL_ERR_NOMEM, "out of memory reading snapshot '%s'", r->path);
    memcpy(s, r->b + r->pos, n);
    s[n] = '\0';
    if (strlen(s) != n) {
        free(s);
        return corrupt(r, "NUL byte inside", what);
    }
    r->pos += n;
    *out = s;
    return MTL_OK;
}

/* Reads an array header and skips its values (copied later by mtl_snapshot_copy). */
static mtl_status get_array(reader *r, mtl_snapshot_array *a)
{
    MTL_TRY(get_string(r, &a->name, "an array name"));
    uint32_t ndim;
    MTL_TRY(get_u32(r, &ndim, a->name));
    if (ndim > MTL_MAX_AXES)
        return corrupt(r, "more axes than mtl supports in", a->name);
    a->ndim = (int)ndim;
    uint64_t product = 1;
    for (uint32_t i = 0; i < ndim; i++) {
        uint32_t d;
        MTL_TRY(get_u32(r, &d, a->name));
        if (d > INT32_MAX)
            return corrupt(r, "axis too large in", a->name);
        a->shape[i] = (int)d;
        product *= d;
        if (product > ((uint64_t)1 << 40))
            return corrupt(r, "implausible size of", a->name);
    }
    uint64_t count;
    MTL_TRY(get_u64(r, &count, a->name));
    if (count != product)
        return corrupt(r, "value count disagrees with the shape of", a->name);
    a->count = (int64_t)count;
    MTL_TRY(need(r, count * 4, a->name));
    a->data = NULL;
    a->file_offset = r->pos;
    r->pos += count * 4;
    return MTL_OK;
}

static mtl_status read_arrays(reader *r, uint32_t n, mtl_snapshot_array **out, int *count)
{
    /* every array takes at least 20 bytes: a count beyond that is a lie, not an allocation */
    if ((uint64_t)n * 20 > r->end - r->pos)
        return corrupt(r, "more arrays announced than fit in", r->section);
    mtl_snapshot_array *arrays = calloc(n ? n : 1, sizeof(*arrays));
    if (!arrays)
        return mtl_fail(r->err, MTL_ERR_NOMEM, "out of memory reading snapshot '%s'", r->path);
    *out = arrays;
    *count = (int)n; /* set before filling, so a failure part-way frees the names read so far */
    for (uint32_t i = 0; i < n; i++)
        MTL_TRY(get_array(r, &arrays[i]));
    return MTL_OK;
}

static mtl_status read_params(reader *r, mtl_snapshot *s)
{
    uint32_t n;
    MTL_TRY(get_u32(r, &n, "the parameter count"));
    return read_arrays(r, n, &s->params, &s->n_params);
}

static mtl_status read_solver(reader *r, mtl_snapshot *s)
{
    mtl_snapshot_state *st = &s->state;
    uint64_t iter, size, fill, pos;
    uint32_t width;
    char *type;
    MTL_TRY(get_u64(r, &iter, "the iteration"));
    MTL_TRY(get_string(r, &type, "the solver type"));
    snprintf(st->solver_type, sizeof(st->solver_type), "%s", type);
    free(type);
    MTL_TRY(get_u64(r, &size, "the smoothing window size"));
    MTL_TRY(get_u64(r, &fill, "the smoothing window fill"));
    MTL_TRY(get_u64(r, &pos, "the smoothing window position"));
    MTL_TRY(get_u32(r, &width, "the smoothing window width"));
    if (iter > INT64_MAX || size > INT32_MAX || fill > size || pos >= (size ? size : 1) || width > INT32_MAX)
        return corrupt(r, "inconsistent solver state", NULL);
    st->iter = (int64_t)iter;
    st->window_size = (int64_t)size;
    st->window_fill = (int64_t)fill;
    st->window_pos = (int64_t)pos;
    st->window_width = (int)width;
    if (width && size > (r->end - r->pos) / 4 / width)
        return corrupt(r, "runs past the end of its section reading", "the smoothing window");
    uint64_t count = size * width;
    st->window = (mtl_snapshot_array){.name = NULL, .ndim = 2, .shape = {(int)size, (int)width},
                                      .count = (int64_t)count, .file_offset = r->pos};
    r->pos += count * 4;
    s->has_state = 1;
    return MTL_OK;
}

static mtl_status read_history(reader *r, mtl_snapshot *s)
{
    uint32_t n_history, n;
    MTL_TRY(get_u32(r, &n_history, "the history count"));
    MTL_TRY(get_u32(r, &n, "the slot count"));
    if (n_history > 16)
        return corrupt(r, "implausible number of history vectors", NULL);
    s->state.n_history = (int)n_history;
    return read_arrays(r, n, &s->state.history, &s->state.n_slots);
}

static mtl_status read_rngs(reader *r, mtl_snapshot *s)
{
    uint32_t n;
    MTL_TRY(get_u32(r, &n, "the generator count"));
    MTL_TRY(need(r, (uint64_t)n * 16, "the generators"));
    s->state.rngs = calloc(n ? n : 1, sizeof(mtl_rng));
    if (!s->state.rngs)
        return mtl_fail(r->err, MTL_ERR_NOMEM, "out of memory reading snapshot '%s'", r->path);
    s->state.n_rngs = (int)n;
    for (uint32_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++)
            MTL_TRY(get_u32(r, &s->state.rngs[i].s[k], "a generator"));
    return MTL_OK;
}

static mtl_status read_layer_states(reader *r, mtl_snapshot *s)
{
    uint32_t n;
    MTL_TRY(get_u32(r, &n, "the layer state count"));
    MTL_TRY(need(r, (uint64_t)n * 12, "the layer states"));
    s->state.layer_states = calloc(n ? n : 1, sizeof(*s->state.layer_states));
    if (!s->state.layer_states)
        return mtl_fail(r->err, MTL_ERR_NOMEM, "out of memory reading snapshot '%s'", r->path);
    for (uint32_t i = 0; i < n; i++) {
        mtl_snapshot_layer_state *ls = &s->state.layer_states[i];
        s->state.n_layer_states = (int)i + 1;
        MTL_TRY(get_string(r, &ls->name, "a layer name"));
        MTL_TRY(get_u64(r, &ls->size, "a layer state size"));
        MTL_TRY(need(r, ls->size, "a layer state"));
        ls->bytes = r->b + r->pos;
        r->pos += (size_t)ls->size;
    }
    return MTL_OK;
}

static mtl_status load_file(const char *path, unsigned char **bytes, size_t *size, mtl_error *err)
{
    char *text;
    MTL_TRY(mtl_read_file(path, "snapshot", 0, &text, size, err));
    *bytes = (unsigned char *)text;
    return MTL_OK;
}

static mtl_status check_envelope(const char *path, const unsigned char *b, size_t size, uint32_t *version,
                                 mtl_error *err)
{
    size_t head = size < sizeof(snapshot_magic) ? size : sizeof(snapshot_magic);
    if (size > 0 && size < sizeof(snapshot_magic) && memcmp(b, snapshot_magic, head) == 0)
        return mtl_fail(err, MTL_ERR_CORRUPT, "snapshot '%s' is truncated: %zu bytes, not even a whole header", path,
                        size);
    if (size < sizeof(snapshot_magic) || memcmp(b, snapshot_magic, sizeof(snapshot_magic)) != 0)
        return mtl_fail(err, MTL_ERR_CORRUPT,
                        "'%s' is not an mtl snapshot (it does not start with \"MTLSNAP\"); snapshots are written "
                        "by `mtl train` as <snapshot_prefix>_iter_<N>" MTL_SNAPSHOT_EXTENSION,
                        path);
    if (size < HEADER_BYTES + CRC_BYTES)
        return mtl_fail(err, MTL_ERR_CORRUPT, "snapshot '%s' is truncated: %zu bytes, not even a whole header", path,
                        size);
    *version = peek_u32(b + 8);
    if (*version == 0 || *version > MTL_SNAPSHOT_VERSION)
        return mtl_fail(err, MTL_ERR_CORRUPT,
                        "snapshot '%s' has format version %u; this mtl reads versions 1 to %d (a newer mtl wrote it?)",
                        path, *version, MTL_SNAPSHOT_VERSION);
    uint64_t total = peek_u64(b + 16);
    if (size < total)
        return mtl_fail(err, MTL_ERR_CORRUPT,
                        "snapshot '%s' is truncated: %zu bytes, its header says %llu (an interrupted copy?)", path,
                        size, (unsigned long long)total);
    if (size > total)
        return mtl_fail(err, MTL_ERR_CORRUPT, "snapshot '%s' is corrupt: %zu bytes, its header says %llu", path, size,
                        (unsigned long long)total);
    uint32_t stored = peek_u32(b + size - CRC_BYTES);
    uLong crc = crc32(0L, Z_NULL, 0);
    for (size_t done = 0; done < size - CRC_BYTES;) {
        size_t piece = size - CRC_BYTES - done > (1u << 30) ? (1u << 30) : size - CRC_BYTES - done;
        crc = crc32(crc, b + done, (uInt)piece);
        done += piece;
    }
    if ((uint32_t)crc != stored)
        return mtl_fail(err, MTL_ERR_CORRUPT,
                        "snapshot '%s' is corrupt: checksum mismatch (CRC32 %08x stored, %08x computed); the file "
                        "was damaged after it was written",
                        path, stored, (unsigned)(uint32_t)crc);
    return MTL_OK;
}

mtl_status mtl_snapshot_read(const char *path, mtl_snapshot **out, mtl_error *err)
{
    if (!out || !path)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "mtl_snapshot_read: path or out is NULL");
    *out = NULL;
    mtl_snapshot *s = calloc(1, sizeof(*s));
    if (!s || !(s->path = mtl_strdup(path))) {
        free(s);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading snapshot '%s'", path);
    }
    mtl_status st = load_file(path, &s->bytes, &s->size, err);
    if (st == MTL_OK)
        st = check_envelope(path, s->bytes, s->size, &s->version, err);

    int seen_params = 0, seen_solver = 0, seen_history = 0, seen_rngs = 0, seen_layer_states = 0;
    size_t pos = HEADER_BYTES, body_end = s->size - CRC_BYTES;
    while (st == MTL_OK && pos < body_end) {
        reader r = {.b = s->bytes, .pos = pos, .end = body_end, .path = path, .section = "header", .err = err};
        if (body_end - pos < SECTION_HEADER_BYTES) {
            st = corrupt(&r, "a section header is cut short", NULL);
            break;
        }
        char tag[5] = {0};
        memcpy(tag, s->bytes + pos, 4);
        uint64_t len = peek_u64(s->bytes + pos + 8);
        r.section = tag;
        r.pos = pos + SECTION_HEADER_BYTES;
        if (len > body_end - r.pos) {
            st = corrupt(&r, "its length runs past the end of the file", NULL);
            break;
        }
        r.end = r.pos + len;
        int *seen = NULL;
        if (strcmp(tag, TAG_PARAMS) == 0)
            seen = &seen_params;
        else if (strcmp(tag, TAG_SOLVER) == 0)
            seen = &seen_solver;
        else if (strcmp(tag, TAG_HISTORY) == 0)
            seen = &seen_history;
        else if (strcmp(tag, TAG_RNGS) == 0)
            seen = &seen_rngs;
        else if (strcmp(tag, TAG_LAYER_STATES) == 0)
            seen = &seen_layer_states;
        if (seen && *seen) {
            st = corrupt(&r, "section appears twice", NULL);
            break;
        }
        if (seen == &seen_params)
            st = read_params(&r, s);
        else if (seen == &seen_solver)
            st = read_solver(&r, s);
        else if (seen == &seen_history)
            st = read_history(&r, s);
        else if (seen == &seen_rngs)
            st = read_rngs(&r, s);
        else if (seen == &seen_layer_states)
            st = read_layer_states(&r, s);
        else
            r.pos = r.end; /* a section a later revision of version 1 added: skip it */
        if (st != MTL_OK)
            break;
        if (seen)
            *seen = 1;
        if (r.pos != r.end) {
            st = corrupt(&r, "section has bytes left over after its contents", NULL);
            break;
        }
        pos = r.end;
    }
    if (st == MTL_OK && !seen_params)
        st = mtl_fail(err, MTL_ERR_CORRUPT, "snapshot '%s' is corrupt: it has no parameter section", path);
    if (st == MTL_OK && seen_solver != seen_history)
        st = mtl_fail(err, MTL_ERR_CORRUPT, "snapshot '%s' is corrupt: solver state without history or the reverse",
                      path);
    if (st != MTL_OK) {
        mtl_snapshot_free(s);
        return st;
    }
    *out = s;
    return MTL_OK;
}

void mtl_snapshot_free(mtl_snapshot *snap)
{
    if (!snap)
        return;
    for (int i = 0; i < snap->n_params; i++)
        free(snap->params[i].name);
    free(snap->params);
    for (int i = 0; i < snap->state.n_slots; i++)
        free(snap->state.history[i].name);
    free(snap->state.history);
    free(snap->state.rngs);
    for (int i = 0; i < snap->state.n_layer_states; i++) {
        free(snap->state.layer_states[i].name);
        if (!snap->bytes) /* a snapshot built for writing owns its state bytes */
            free((void *)snap->state.layer_states[i].bytes);
    }
    free(snap->state.layer_states);
    free(snap->path);
    free(snap->bytes);
    free(snap);
}

void mtl_snapshot_copy(const mtl_snapshot *snap, const mtl_snapshot_array *a, float *dst)
{
    if (a->data || !snap->bytes) {
        if (a->data)
            memcpy(dst, a->data, (size_t)a->count * sizeof(float));
        return;
    }
    const unsigned char *src = snap->bytes + a->file_offset;
    if (host_is_little_endian()) {
        memcpy(dst, src, (size_t)a->count * sizeof(float));
        return;
    }
    for (int64_t i = 0; i < a->count; i++) {
        uint32_t u = peek_u32(src + 4 * i);
        memcpy(&dst[i], &u, 4);
    }
}

const mtl_snapshot_array *mtl_snapshot_find_param(const mtl_snapshot *snap, const char *name)
{
    for (int i = 0; i < snap->n_params; i++)
        if (strcmp(snap->params[i].name, name) == 0)
            return &snap->params[i];
    return NULL;
}

/* ------------------------------------------------------------------ nets */

static void param_name(char *buf, size_t size, const mtl_layer *l, int index)
{
    snprintf(buf, size, "%s/%d", l->name ? l->name : "?", index);
}

mtl_status mtl_snapshot_add_net_params(mtl_snapshot *snap, const mtl_net *net, mtl_error *err)
{
    int n = 0;
    for (int i = 0; i < net->n_layers; i++)
        n += net->layers[i]->n_params;
    mtl_snapshot_array *arrays = calloc(n ? (size_t)n : 1, sizeof(*arrays));
    if (!arrays)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory describing the net's parameters");
    int k = 0;
    for (int i = 0; i < net->n_layers; i++) {
        const mtl_layer *l = net->layers[i];
        for (int j = 0; j < l->n_params; j++, k++) {
            char name[1024];
            param_name(name, sizeof(name), l, j);
            const mtl_tensor *t = l->params[j];
            arrays[k].name = mtl_strdup(name);
            arrays[k].ndim = t->ndim;
            memcpy(arrays[k].shape, t->shape, sizeof(t->shape));
            arrays[k].count = t->count;
            arrays[k].data = t->data;
            if (!arrays[k].name) {
                for (int m = 0; m < k; m++)
                    free(arrays[m].name);
                free(arrays);
                return mtl_fail(err, MTL_ERR_NOMEM, "out of memory describing the net's parameters");
            }
        }
    }
    snap->params = arrays;
    snap->n_params = n;
    return MTL_OK;
}

static const char *shape_text(int ndim, const int *shape, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    if (ndim == 0)
        snprintf(buf, size, "scalar");
    for (int i = 0; i < ndim && used < size; i++) {
        int w = snprintf(buf + used, size - used, "%s%d", i ? "x" : "", shape[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    return buf;
}

/* Equal shapes, ignoring leading axes of size 1 (Caffe's legacy 4-D blobs: 1x1x10x500 is 10x500). */
static int shapes_match(const mtl_tensor *t, const mtl_snapshot_array *a)
{
    if (t->count != a->count)
        return 0;
    int i = 0, j = 0;
    while (i < t->ndim && t->shape[i] == 1)
        i++;
    while (j < a->ndim && a->shape[j] == 1)
        j++;
    if (t->ndim - i != a->ndim - j)
        return 0;
    for (; i < t->ndim; i++, j++)
        if (t->shape[i] != a->shape[j])
            return 0;
    return 1;
}

static int exact_shape(const mtl_tensor *t, const mtl_snapshot_array *a)
{
    if (t->ndim != a->ndim || t->count != a->count)
        return 0;
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] != a->shape[i])
            return 0;
    return 1;
}

mtl_status mtl_snapshot_restore_params(const mtl_snapshot *snap, mtl_net *net, mtl_error *err)
{
    const char *path = snap->path ? snap->path : "<snapshot>";
    int n_net = 0;
    char name[1024], a_shape[128], b_shape[128];
    for (int i = 0; i < net->n_layers; i++) {
        mtl_layer *l = net->layers[i];
        for (int j = 0; j < l->n_params; j++, n_net++) {
            param_name(name, sizeof(name), l, j);
            const mtl_snapshot_array *a = mtl_snapshot_find_param(snap, name);
            const mtl_tensor *t = l->params[j];
            if (!a)
                return mtl_fail(err, MTL_ERR_CONFIG,
                                "snapshot '%s' does not fit this net: it has no parameter '%s' (was it written for "
                                "another net? use --weights to copy matching layers only)",
                                path, name);
            if (!exact_shape(t, a))
                return mtl_fail(err, MTL_ERR_CONFIG,
                                "snapshot '%s' does not fit this net: parameter '%s' is %s in the net, %s in the file",
                                path, name, shape_text(t->ndim, t->shape, a_shape, sizeof(a_shape)),
                                shape_text(a->ndim, a->shape, b_shape, sizeof(b_shape)));
        }
    }
    if (n_net != snap->n_params) {
        for (int k = 0; k < snap->n_params; k++) {
            const char *fname = snap->params[k].name;
            const char *slash = strrchr(fname, '/');
            int layer = slash ? -1 : -2;
            if (slash) {
                char lname[1024];
                snprintf(lname, sizeof(lname), "%.*s", (int)(slash - fname), fname);
                layer = mtl_net_layer_index(net, lname);
            }
            int index = slash ? atoi(slash + 1) : -1;
            if (layer < 0 || index < 0 || index >= net->layers[layer]->n_params)
                return mtl_fail(err, MTL_ERR_CONFIG,
                                "snapshot '%s' does not fit this net: the net has no parameter '%s'", path, fname);
        }
        return mtl_fail(err, MTL_ERR_CONFIG, "snapshot '%s' does not fit this net: %d parameters in the file, %d in "
                        "the net", path, snap->n_params, n_net);
    }
    for (int i = 0; i < net->n_layers; i++) {
        mtl_layer *l = net->layers[i];
        for (int j = 0; j < l->n_params; j++) {
            param_name(name, sizeof(name), l, j);
            mtl_snapshot_copy(snap, mtl_snapshot_find_param(snap, name), l->params[j]->data);
        }
    }
    return MTL_OK;
}

mtl_status mtl_snapshot_load_weights(const mtl_snapshot *snap, mtl_net *net, FILE *report,
                                     mtl_snapshot_match *match, mtl_error *err)
{
    const char *path = snap->path ? snap->path : "<snapshot>";
    mtl_snapshot_match m = {0};
    unsigned char *taken = calloc(snap->n_params ? (size_t)snap->n_params : 1, 1);
    if (!taken)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory loading weights from '%s'", path);
    if (report)
        fprintf(report, "Loading weights from %s\n", path);
    char name[1024], a_shape[128], b_shape[128];
    int n_net = 0;
    for (int i = 0; i < net->n_layers; i++) {
        mtl_layer *l = net->layers[i];
        for (int j = 0; j < l->n_params; j++, n_net++) {
            param_name(name, sizeof(name), l, j);
            const mtl_tensor *t = l->params[j];
            const mtl_snapshot_array *a = mtl_snapshot_find_param(snap, name);
            shape_text(t->ndim, t->shape, a_shape, sizeof(a_shape));
            if (!a) {
                m.missing++;
                if (report)
                    fprintf(report, "  missing   %s (%s): not in the file, keeps its initial values\n", name,
                            a_shape);
                continue;
            }
            taken[a - snap->params] = 1;
            shape_text(a->ndim, a->shape, b_shape, sizeof(b_shape));
            if (!shapes_match(t, a)) {
                m.mismatched++;
                if (report)
                    fprintf(report, "  mismatch  %s: %s in the net, %s in the file; keeps its initial values\n",
                            name, a_shape, b_shape);
                continue;
            }
            mtl_snapshot_copy(snap, a, l->params[j]->data);
            m.copied++;
            if (report)
                fprintf(report, "  copied    %s (%s)\n", name, a_shape);
        }
    }
    for (int k = 0; k < snap->n_params; k++) {
        if (taken[k])
            continue;
        m.unused++;
        if (report)
            fprintf(report, "  unused    %s (%s): in the file, not in the net\n", snap->params[k].name,
                    shape_text(snap->params[k].ndim, snap->params[k].shape, b_shape, sizeof(b_shape)));
    }
    free(taken);
    if (report)
        fprintf(report, "Weights: %d copied, %d missing, %d shape mismatches, %d unused in the file\n", m.copied,
                m.missing, m.mismatched, m.unused);
    if (match)
        *match = m;
    if (n_net > 0 && m.copied == 0)
        return mtl_fail(err, MTL_ERR_NOT_FOUND,
                        "no parameter of the net matches '%s' by layer name, index and shape (%d missing, %d shape "
                        "mismatches): is it the right file?",
                        path, m.missing, m.mismatched);
    return MTL_OK;
}
