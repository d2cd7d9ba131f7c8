/* mtl datasets in LMDB: the writer builds "<path>.partial" and renames it into place once the
 * metadata record is committed and synced; the reader refuses anything that is not a complete,
 * intact database before it touches a page, and then reads records straight from the memory map. */
#include "data/db.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <lmdb.h>

#define DB_FORMAT "mtl-lmdb"
#define DB_FORMAT_VERSION 1
#define DB_BATCH_RECORDS 1000           /* records per write transaction */
#define DB_BATCH_BYTES ((size_t)256 << 20) /* and at most this many bytes (unless one record is bigger) */
#define DB_KEY_MAX 9999999999LL         /* keys are ten digits */

/* ---- small file-system helpers ---- */

static char *join(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *s = malloc(na + nb + 1);
    if (s) {
        memcpy(s, a, na);
        memcpy(s + na, b, nb + 1);
    }
    return s;
}

/* The path without trailing slashes ("out/db/" and "out/db" are the same database). */
static char *clean_path(const char *path)
{
    char *s = mtl_strdup(path);
    if (!s)
        return NULL;
    size_t n = strlen(s);
    while (n > 1 && s[n - 1] == '/')
        s[--n] = '\0';
    return s;
}

/* Sets *is_db when dir is a directory holding nothing but LMDB's data.mdb and lock.mdb (a database
 * mtl may replace or remove), clears it when nothing is there, and fails when it is anything else. */
static mtl_status probe_db_dir(const char *dir, const char *role, int *is_db, mtl_error *err)
{
    *is_db = 0;
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return MTL_OK; /* nothing there (creating it will say why if it cannot be) */
        return mtl_fail(err, MTL_ERR_IO, "cannot check %s '%s': %s", role, dir, strerror(errno));
    }
    DIR *d = S_ISDIR(st.st_mode) ? opendir(dir) : NULL;
    if (!d)
        return mtl_fail(err, MTL_ERR_IO, "%s '%s' exists and is not an LMDB database directory; not replacing it",
                        role, dir);
    const struct dirent *e;
    int ok = 1;
    while (ok && (e = readdir(d)) != NULL)
        ok = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 || strcmp(e->d_name, "data.mdb") == 0 ||
             strcmp(e->d_name, "lock.mdb") == 0;
    closedir(d);
    if (!ok)
        return mtl_fail(err, MTL_ERR_IO,
                        "%s '%s' holds files other than data.mdb and lock.mdb; not replacing it (remove it or "
                        "choose another path)",
                        role, dir);
    *is_db = 1;
    return MTL_OK;
}

/* Removes a database directory (data.mdb, lock.mdb, the directory); returns 0 or an errno. */
static int remove_db_dir(const char *dir)
{
    static const char *const files[] = {"/data.mdb", "/lock.mdb"};
    for (int i = 0; i < 2; i++) {
        char *f = join(dir, files[i]);
        if (!f)
            return ENOMEM;
        int rc = unlink(f) == 0 || errno == ENOENT ? 0 : errno;
        free(f);
        if (rc)
            return rc;
    }
    return rmdir(dir) == 0 || errno == ENOENT ? 0 : errno;
}

/* fsync on a directory makes a rename or a new entry in it durable. */
static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static char *parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return mtl_strdup(".");
    if (slash == path)
        return mtl_strdup("/");
    char *s = malloc((size_t)(slash - path) + 1);
    if (s) {
        memcpy(s, path, (size_t)(slash - path));
        s[slash - path] = '\0';
    }
    return s;
}

static void format_key(char key[24], int64_t index) { snprintf(key, 24, "%010" PRId64, index); }

/* ---- metadata as JSON ---- */

/* Label names are n_labels long, except in a detection database, where they are the category names
 * and end at a NULL entry. */
static int meta_name_count(const mtl_db_meta *m)
{
    if (!m->label_names)
        return 0;
    int n = 0;
    if (m->has_boxes)
        while (m->label_names[n])
            n++;
    else
        n = m->n_labels;
    return n;
}

static char *meta_to_json(const mtl_db_meta *m)
{
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return NULL;
    cJSON_AddStringToObject(root, "format", DB_FORMAT);
    cJSON_AddNumberToObject(root, "version", DB_FORMAT_VERSION);
    cJSON_AddNumberToObject(root, "count", (double)m->count);
    cJSON_AddNumberToObject(root, "n_labels", m->n_labels);
    int n_names = meta_name_count(m);
    if (n_names > 0) {
        cJSON *names = cJSON_AddArrayToObject(root, "label_names");
        for (int i = 0; names && i < n_names; i++)
            cJSON_AddItemToArray(names, cJSON_CreateString(m->label_names[i] ? m->label_names[i] : ""));
        if (m->has_boxes && m->category_ids) {
            cJSON *ids = cJSON_AddArrayToObject(root, "category_ids");
            for (int i = 0; ids && i < n_names; i++)
                cJSON_AddItemToArray(ids, cJSON_CreateNumber(m->category_ids[i]));
        }
    } else {
        cJSON_AddNullToObject(root, "label_names");
    }
    cJSON_AddNumberToObject(root, "channels", m->channels);
    cJSON_AddNumberToObject(root, "height", m->height);
    cJSON_AddNumberToObject(root, "width", m->width);
    cJSON_AddBoolToObject(root, "encoded", m->encoded != 0);
    cJSON_AddBoolToObject(root, "has_boxes", m->has_boxes != 0);
    cJSON_AddNumberToObject(root, "skipped", (double)m->skipped);
    cJSON_AddNumberToObject(root, "missing_labels", (double)m->missing_labels);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

/* An integer field in [lo, hi]; absent fields give def when optional. */
static mtl_status json_int(const cJSON *root, const char *name, int64_t lo, int64_t hi, int required, int64_t def,
                           int64_t *out, const char *path, mtl_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!v && !required) {
        *out = def;
        return MTL_OK;
    }
    double d = 0;
    if (cJSON_IsBool(v))
        d = cJSON_IsTrue(v) ? 1 : 0;
    else if (cJSON_IsNumber(v))
        d = v->valuedouble;
    if (!v || !(cJSON_IsBool(v) || cJSON_IsNumber(v)) || d != floor(d) || d < (double)lo || d > (double)hi)
        return mtl_fail(err, MTL_ERR_CORRUPT,
                        "the metadata record of '%s' is corrupt: '%s' is %s, expected an integer in [%" PRId64
                        ", %" PRId64 "]",
                        path, name, v ? "out of range or not an integer" : "missing", lo, hi);
    *out = (int64_t)d;
    return MTL_OK;
}

static mtl_status meta_from_json(const char *text, size_t size, const char *path, mtl_db_meta *m, mtl_error *err)
{
    memset(m, 0, sizeof(*m));
    cJSON *root = cJSON_ParseWithLength(text, size);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return mtl_fail(err, MTL_ERR_CORRUPT,
                        "the metadata record of '%s' is not valid JSON; the database is corrupt (convert again)",
                        path);
    }
    mtl_status st = MTL_OK;
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (!cJSON_IsString(format) || strcmp(format->valuestring, DB_FORMAT) != 0)
        st = mtl_fail(err, MTL_ERR_CORRUPT, "the metadata record of '%s' does not say format \"%s\"", path,
                      DB_FORMAT);
    int64_t v[9];
    static const char *const names[9] = {"version", "count", "n_labels", "channels", "height",
                                         "width",   "encoded", "has_boxes", "skipped"};
    static const int64_t hi[9] = {1000000, DB_KEY_MAX + 1, 1 << 20, 1 << 20, 1 << 30, 1 << 30, 1, 1, INT64_C(1) << 50};
    for (int i = 0; i < 9 && st == MTL_OK; i++)
        st = json_int(root, names[i], 0, hi[i], i < 6, 0, &v[i], path, err);
    int64_t missing = 0;
    if (st == MTL_OK)
        st = json_int(root, "missing_labels", 0, INT64_C(1) << 50, 0, 0, &missing, path, err);
    if (st == MTL_OK && v[0] != DB_FORMAT_VERSION)
        st = mtl_fail(err, MTL_ERR_UNSUPPORTED, "'%s' is database format version %" PRId64 "; this mtl reads %d",
                      path, v[0], DB_FORMAT_VERSION);
    if (st == MTL_OK) {
        m->count = v[1];
        m->n_labels = (int)v[2];
        m->channels = (int)v[3];
        m->height = (int)v[4];
        m->width = (int)v[5];
        m->encoded = (int)v[6];
        m->has_boxes = (int)v[7];
        m->skipped = v[8];
        m->missing_labels = missing;
    }
    const cJSON *names_json = cJSON_GetObjectItemCaseSensitive(root, "label_names");
    if (st == MTL_OK && names_json && !cJSON_IsNull(names_json)) {
        int n = cJSON_IsArray(names_json) ? cJSON_GetArraySize(names_json) : -1;
        if (n < 0 || (!m->has_boxes && n != m->n_labels))
            st = mtl_fail(err, MTL_ERR_CORRUPT,
                          "the metadata record of '%s' is corrupt: 'label_names' must be a list of %d names", path,
                          m->n_labels);
        /* NULL-terminated, so detection databases (whose names are not n_labels long) can be freed */
        if (st == MTL_OK && !(m->label_names = calloc((size_t)n + 1, sizeof(char *))))
            st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading the metadata of '%s'", path);
        for (int i = 0; st == MTL_OK && i < n; i++) {
            const cJSON *s = cJSON_GetArrayItem(names_json, i);
            if (!cJSON_IsString(s))
                st = mtl_fail(err, MTL_ERR_CORRUPT, "the metadata record of '%s' is corrupt: label name %d is not "
                              "a string", path, i);
            else if (!(m->label_names[i] = mtl_strdup(s->valuestring)))
                st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading the metadata of '%s'", path);
        }
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(root, "category_ids");
        if (st == MTL_OK && m->has_boxes && ids) {
            if (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) != n)
                st = mtl_fail(err, MTL_ERR_CORRUPT,
                              "the metadata record of '%s' is corrupt: 'category_ids' must be a list of %d ids", path,
                              n);
            else if (!(m->category_ids = calloc((size_t)n + 1, sizeof(int))))
                st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading the metadata of '%s'", path);
            for (int i = 0; st == MTL_OK && i < n; i++) {
                const cJSON *id = cJSON_GetArrayItem(ids, i);
                if (!cJSON_IsNumber(id) || id->valuedouble != floor(id->valuedouble) ||
                    fabs(id->valuedouble) > 2147483647.0)
                    st = mtl_fail(err, MTL_ERR_CORRUPT, "the metadata record of '%s' is corrupt: category id %d is "
                                  "not an integer", path, i);
                else
                    m->category_ids[i] = (int)id->valuedouble;
            }
        }
    }
    cJSON_Delete(root);
    if (st != MTL_OK)
        mtl_db_meta_free(m);
    return st;
}

void mtl_db_meta_free(mtl_db_meta *meta)
{
    if (!meta)
        return;
    if (meta->label_names) {
        int n = meta_name_count(meta);
        for (int i = 0; i < n; i++)
            free(meta->label_names[i]);
        free(meta->label_names);
    }
    free(meta->category_ids);
    meta->label_names = NULL;
    meta->category_ids = NULL;
}

/* ---- writer ---- */

struct mtl_db_writer {
    char *path;    /* the final name */
    char *partial; /* where it is built */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    size_t mapsize;
    int64_t pending;      /* records in the open transaction */
    size_t pending_bytes;
    int64_t last_index;   /* the highest key so far: larger keys append at the end of the tree */
    int failed;
};

static mtl_status lmdb_fail(mtl_error *err, int rc, const char *what, const char *path)
{
    return mtl_fail(err, rc == ENOMEM ? MTL_ERR_NOMEM : MTL_ERR_IO, "%s '%s': %s", what, path, mdb_strerror(rc));
}

/* Grows the map (only possible between transactions) so that the next transaction, which writes
 * at most `batch` bytes of records, cannot hit MDB_MAP_FULL: LMDB needs roughly twice the record
 * bytes in pages (copy-on-write of the tree plus leaf overhead). */
static mtl_status writer_ensure_room(mtl_db_writer *w, size_t batch, mtl_error *err)
{
    MDB_envinfo info;
    MDB_stat stat;
    mdb_env_info(w->env, &info);
    mdb_env_stat(w->env, &stat);
    size_t used = (info.me_last_pgno + 1) * (size_t)stat.ms_psize;
    size_t need = used + 2 * batch + ((size_t)16 << 20);
    if (need <= w->mapsize)
        return MTL_OK;
    size_t size = w->mapsize;
    while (size < need)
        size = size > SIZE_MAX / 2 ? SIZE_MAX : size * 2;
    int rc = mdb_env_set_mapsize(w->env, size);
    if (rc)
        return lmdb_fail(err, rc, "cannot grow the memory map of", w->partial);
    w->mapsize = size;
    return MTL_OK;
}

static mtl_status writer_begin(mtl_db_writer *w, size_t batch, mtl_error *err)
{
    MTL_TRY(writer_ensure_room(w, batch, err));
    int rc = mdb_txn_begin(w->env, NULL, 0, &w->txn);
    if (rc)
        return lmdb_fail(err, rc, "cannot start a write transaction in", w->partial);
    return MTL_OK;
}

static mtl_status writer_commit(mtl_db_writer *w, mtl_error *err)
{
    int rc = mdb_txn_commit(w->txn);
    w->txn = NULL;
    w->pending = 0;
    w->pending_bytes = 0;
    if (rc) {
        w->failed = 1;
        return lmdb_fail(err, rc, "cannot commit records to", w->partial);
    }
    return MTL_OK;
}

mtl_status mtl_db_writer_open(const char *path, mtl_db_writer **out, mtl_error *err)
{
    *out = NULL;
    if (!path || !*path)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "no database path given");
    mtl_db_writer *w = calloc(1, sizeof(*w));
    if (!w)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory opening '%s'", path);
    w->last_index = -1;
    w->path = clean_path(path);
    w->partial = w->path ? join(w->path, ".partial") : NULL;
    if (!w->partial) {
        free(w->path);
        free(w);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory opening '%s'", path);
    }
    /* refuse early if the final name holds something that is not a database we may replace */
    int is_db, leftover = 0, rc = 0;
    mtl_status st = probe_db_dir(w->path, "the output", &is_db, err);
    if (st == MTL_OK)
        st = probe_db_dir(w->partial, "the leftover", &leftover, err);
    if (st == MTL_OK && leftover && (rc = remove_db_dir(w->partial)) != 0)
        st = mtl_fail(err, MTL_ERR_IO, "cannot remove the leftover '%s': %s", w->partial, strerror(rc));
    if (st == MTL_OK && mkdir(w->partial, 0777) != 0)
        st = mtl_fail(err, MTL_ERR_IO, "cannot create the database directory '%s': %s", w->partial, strerror(errno));
    if (st != MTL_OK) {
        free(w->partial);
        free(w->path);
        free(w);
        return st;
    }
    /* A large map costs only address space (the file grows with the data), so start big and shrink
     * only where the address space is small; writer_ensure_room grows it if ever needed. */
    size_t mapsize = sizeof(size_t) >= 8 ? (size_t)1 << 40 : (size_t)256 << 20;
    rc = ENOMEM;
    for (; rc == ENOMEM && mapsize >= ((size_t)64 << 20); mapsize /= 4) {
        if ((rc = mdb_env_create(&w->env)) != 0)
            break;
        if ((rc = mdb_env_set_mapsize(w->env, mapsize)) == 0 &&
            (rc = mdb_env_open(w->env, w->partial, MDB_NOSYNC | MDB_NOMETASYNC, 0666)) == 0) {
            w->mapsize = mapsize;
            break;
        }
        mdb_env_close(w->env);
        w->env = NULL;
    }
    if (rc == 0)
        rc = mdb_txn_begin(w->env, NULL, 0, &w->txn);
    if (rc == 0)
        rc = mdb_dbi_open(w->txn, NULL, 0, &w->dbi);
    if (rc) {
        st = lmdb_fail(err, rc, "cannot create an LMDB database in", w->partial);
        mtl_db_writer_abort(w);
        return st;
    }
    *out = w;
    return MTL_OK;
}

mtl_status mtl_db_writer_put(mtl_db_writer *w, int64_t index, const mtl_record *r, mtl_error *err)
{
    if (w->failed)
        return mtl_fail(err, MTL_ERR_IO, "the database '%s' failed earlier; it cannot take more records", w->partial);
    if (index < 0 || index > DB_KEY_MAX)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "record index %" PRId64 " is outside 0..%lld", index, DB_KEY_MAX);
    if (r->n_labels < 0 || r->n_boxes < 0 || r->channels < 0 || r->height < 0 || r->width < 0 ||
        r->n_bytes > UINT32_MAX || (r->flags & ~MTL_RECORD_ENCODED) || (r->n_bytes && !r->data) ||
        (r->n_labels && !r->labels) || (r->n_boxes && !r->boxes))
        return mtl_fail(err, MTL_ERR_ARGUMENT, "record %" PRId64 " for '%s' is not valid (sizes, flags or a missing "
                        "array)", index, w->path);
    if (!(r->flags & MTL_RECORD_ENCODED) &&
        (uint64_t)r->channels * (uint64_t)r->height * (uint64_t)r->width != (uint64_t)r->n_bytes)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "record %" PRId64 " has %zu bytes of pixels for a %dx%dx%d image",
                        index, r->n_bytes, r->channels, r->height, r->width);
    size_t size = mtl_record_size(r);
    if (w->txn && w->pending > 0 && w->pending_bytes + size > DB_BATCH_BYTES)
        MTL_TRY(writer_commit(w, err));
    if (!w->txn) {
        mtl_status st = writer_begin(w, size > DB_BATCH_BYTES ? size : DB_BATCH_BYTES, err);
        if (st != MTL_OK) {
            w->failed = 1;
            return st;
        }
    }
    char key[24];
    format_key(key, index);
    MDB_val k = {strlen(key), key}, v = {size, NULL};
    int rc = mdb_put(w->txn, w->dbi, &k, &v, MDB_RESERVE | (index > w->last_index ? MDB_APPEND : 0));
    if (rc) {
        mdb_txn_abort(w->txn);
        w->txn = NULL;
        w->failed = 1;
        return mtl_fail(err, rc == MDB_MAP_FULL ? MTL_ERR_NOMEM : MTL_ERR_IO,
                        "cannot write record %" PRId64 " to '%s': %s", index, w->partial, mdb_strerror(rc));
    }
    mtl_record_encode(r, v.mv_data);
    if (index > w->last_index)
        w->last_index = index;
    w->pending++;
    w->pending_bytes += size;
    if (w->pending >= DB_BATCH_RECORDS)
        MTL_TRY(writer_commit(w, err));
    return MTL_OK;
}

/* Renames the finished partial directory over the final path: an old database there is moved aside
 * first (rename cannot replace a non-empty directory) and removed once the new one is in place. */
static mtl_status writer_install(mtl_db_writer *w, mtl_error *err)
{
    mtl_status st = MTL_OK;
    char *old = join(w->path, ".old");
    char *parent = parent_dir(w->path);
    if (!old || !parent) {
        free(old);
        free(parent);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory finishing '%s'", w->path);
    }
    sync_dir(w->partial);
    int existing = 0, stale = 0, rc = 0;
    st = probe_db_dir(w->path, "the output", &existing, err);
    if (st == MTL_OK && existing) {
        st = probe_db_dir(old, "the old database", &stale, err);
        if (st == MTL_OK && ((rc = remove_db_dir(old)) != 0 || (rename(w->path, old) != 0 && (rc = errno) != 0)))
            st = mtl_fail(err, MTL_ERR_IO, "cannot move the old database '%s' aside: %s", w->path, strerror(rc));
    }
    if (st == MTL_OK && rename(w->partial, w->path) != 0) {
        st = mtl_fail(err, MTL_ERR_IO, "cannot rename '%s' to '%s': %s", w->partial, w->path, strerror(errno));
        if (existing)
            rename(old, w->path);
    }
    if (st == MTL_OK) {
        sync_dir(parent);
        if (existing)
            remove_db_dir(old);
    }
    free(old);
    free(parent);
    return st;
}

mtl_status mtl_db_writer_finish(mtl_db_writer *w, const mtl_db_meta *meta, mtl_error *err)
{
    mtl_status st = MTL_OK;
    if (w->failed)
        st = mtl_fail(err, MTL_ERR_IO, "the database '%s' failed earlier; it was not finished", w->path);
    char *json = st == MTL_OK ? meta_to_json(meta) : NULL;
    if (st == MTL_OK && !json)
        st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory writing the metadata of '%s'", w->path);
    if (st == MTL_OK && !w->txn)
        st = writer_begin(w, strlen(json), err);
    if (st == MTL_OK) {
        MDB_stat stat;
        int rc = mdb_stat(w->txn, w->dbi, &stat);
        if (rc)
            st = lmdb_fail(err, rc, "cannot count the records of", w->partial);
        else if ((int64_t)stat.ms_entries != meta->count)
            st = mtl_fail(err, MTL_ERR_ARGUMENT,
                          "the metadata of '%s' says %" PRId64 " records but %zu distinct records were written",
                          w->path, meta->count, (size_t)stat.ms_entries);
    }
    if (st == MTL_OK) {
        MDB_val k = {strlen(MTL_DB_META_KEY), (void *)MTL_DB_META_KEY}, v = {strlen(json), json};
        int rc = mdb_put(w->txn, w->dbi, &k, &v, 0);
        if (rc)
            st = lmdb_fail(err, rc, "cannot write the metadata record of", w->partial);
        else
            st = writer_commit(w, err);
    }
    free(json);
    if (st == MTL_OK) {
        int rc = mdb_env_sync(w->env, 1);
        if (rc)
            st = lmdb_fail(err, rc, "cannot flush", w->partial);
    }
    if (st == MTL_OK) {
        mdb_env_close(w->env);
        w->env = NULL;
        st = writer_install(w, err);
    }
    mtl_db_writer_abort(w); /* frees the writer; after a successful install there is no partial left */
    return st;
}

void mtl_db_writer_abort(mtl_db_writer *w)
{
    if (!w)
        return;
    if (w->txn)
        mdb_txn_abort(w->txn);
    if (w->env)
        mdb_env_close(w->env);
    remove_db_dir(w->partial);
    free(w->partial);
    free(w->path);
    free(w);
}

/* ---- reader ---- */

typedef struct db_reader {
    pthread_t thread;
    MDB_txn *txn;
} db_reader;

struct mtl_db {
    char *path;
    MDB_env *env;
    MDB_dbi dbi;
    mtl_db_meta meta;
    /* one long-lived read transaction per thread that reads (the net's and the prefetcher's):
     * nothing changes under a finished database, so records stay valid in the map */
    pthread_mutex_t lock;
    db_reader *readers;
    int n_readers, cap_readers;
};

/* The read transaction of the calling thread, started on first use. */
static mtl_status db_txn(mtl_db *db, MDB_txn **txn, mtl_error *err)
{
    pthread_t self = pthread_self();
    mtl_status st = MTL_OK;
    pthread_mutex_lock(&db->lock);
    *txn = NULL;
    for (int i = 0; i < db->n_readers && !*txn; i++)
        if (pthread_equal(db->readers[i].thread, self))
            *txn = db->readers[i].txn;
    if (!*txn) {
        if (db->n_readers == db->cap_readers) {
            int cap = db->cap_readers ? 2 * db->cap_readers : 4;
            db_reader *grown = realloc(db->readers, (size_t)cap * sizeof(*grown));
            if (grown) {
                db->readers = grown;
                db->cap_readers = cap;
            }
        }
        int rc = db->n_readers < db->cap_readers ? mdb_txn_begin(db->env, NULL, MDB_RDONLY, txn) : ENOMEM;
        if (rc)
            st = lmdb_fail(err, rc, "cannot start a read transaction on", db->path);
        else
            db->readers[db->n_readers++] = (db_reader){self, *txn};
    }
    pthread_mutex_unlock(&db->lock);
    return st;
}

static mtl_status db_check_files(const char *path, off_t *data_size, mtl_error *err)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno != ENOENT)
            return mtl_fail(err, MTL_ERR_IO, "cannot open the database '%s': %s", path, strerror(errno));
        char *partial = join(path, ".partial");
        int has_partial = partial && stat(partial, &st) == 0;
        free(partial);
        return mtl_fail(err, MTL_ERR_NOT_FOUND, "the database '%s' does not exist%s", path,
                        has_partial ? " ('.partial' next to it is left from a conversion that did not finish; "
                                      "convert again)"
                                    : "");
    }
    if (!S_ISDIR(st.st_mode))
        return mtl_fail(err, MTL_ERR_CORRUPT,
                        "'%s' is not an LMDB database: a database is a directory holding data.mdb", path);
    char *data = join(path, "/data.mdb");
    if (!data)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory opening '%s'", path);
    int rc = stat(data, &st) == 0 ? 0 : errno;
    free(data);
    if (rc)
        return mtl_fail(err, rc == ENOENT ? MTL_ERR_CORRUPT : MTL_ERR_IO,
                        "'%s' is not an LMDB database: cannot read its data.mdb (%s)", path, strerror(rc));
    if (st.st_size == 0)
        return mtl_fail(err, MTL_ERR_CORRUPT, "the database '%s' is truncated: its data.mdb is empty", path);
    *data_size = st.st_size;
    return MTL_OK;
}

static mtl_status db_open(mtl_db *db, mtl_error *err)
{
    off_t data_size = 0;
    MTL_TRY(db_check_files(db->path, &data_size, err));
    int rc = mdb_env_create(&db->env);
    if (rc)
        return lmdb_fail(err, rc, "cannot open", db->path);
    /* map only the file: a finished database never grows, and the writer's large map size (kept in
     * the file) would otherwise reserve that much address space in every reader */
    size_t mapsize = ((size_t)data_size + 65535) & ~(size_t)65535;
    rc = mdb_env_set_mapsize(db->env, mapsize);
    /* read-only, no lock file (finished databases have no writer: read-only media work too), and
     * transactions not tied to threads' TLS */
    if (!rc)
        rc = mdb_env_open(db->env, db->path, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0);
    if (rc)
        return mtl_fail(err, MTL_ERR_CORRUPT,
                        "'%s' is not a readable LMDB database (damaged, truncated or another format): %s "
                        "(data.mdb has %lld bytes)",
                        db->path, mdb_strerror(rc), (long long)data_size);
    /* A truncated data.mdb would make LMDB fault (SIGBUS) on the first page past the end of the file,
     * so compare the committed page count with the file before reading any page. */
    MDB_envinfo info;
    MDB_stat stat;
    mdb_env_info(db->env, &info);
    mdb_env_stat(db->env, &stat);
    uint64_t needed = ((uint64_t)info.me_last_pgno + 1) * stat.ms_psize;
    if ((uint64_t)data_size < needed)
        return mtl_fail(err, MTL_ERR_CORRUPT,
                        "the database '%s' is truncated: data.mdb has %lld bytes but its pages end at %llu; "
                        "convert the data again",
                        db->path, (long long)data_size, (unsigned long long)needed);
    MDB_txn *txn;
    MTL_TRY(db_txn(db, &txn, err));
    if ((rc = mdb_dbi_open(txn, NULL, 0, &db->dbi)) != 0)
        return lmdb_fail(err, rc, "cannot open the records of", db->path);
    MDB_val k = {strlen(MTL_DB_META_KEY), (void *)MTL_DB_META_KEY}, v;
    rc = mdb_get(txn, db->dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        return mtl_fail(err, MTL_ERR_CORRUPT,
                        "the database '%s' is incomplete: it has no metadata record (an interrupted or failed "
                        "conversion, or not written by mtl); convert the data again",
                        db->path);
    if (rc)
        return mtl_fail(err, MTL_ERR_CORRUPT, "cannot read the metadata record of '%s': %s", db->path,
                        mdb_strerror(rc));
    MTL_TRY(meta_from_json(v.mv_data, v.mv_size, db->path, &db->meta, err));
    if ((rc = mdb_stat(txn, db->dbi, &stat)) != 0)
        return lmdb_fail(err, rc, "cannot count the records of", db->path);
    if ((int64_t)stat.ms_entries != db->meta.count + 1)
        return mtl_fail(err, MTL_ERR_CORRUPT,
                        "the database '%s' is corrupt: its metadata says %" PRId64 " records but it holds %zu",
                        db->path, db->meta.count, (size_t)stat.ms_entries - 1);
    return MTL_OK;
}

mtl_status mtl_db_open(const char *path, mtl_db **out, mtl_error *err)
{
    *out = NULL;
    if (!path || !*path)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "no database path given");
    mtl_db *db = calloc(1, sizeof(*db));
    if (!db || !(db->path = clean_path(path))) {
        free(db);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory opening '%s'", path);
    }
    pthread_mutex_init(&db->lock, NULL);
    mtl_status st = db_open(db, err);
    if (st != MTL_OK) {
        mtl_db_close(db);
        return st;
    }
    *out = db;
    return MTL_OK;
}

void mtl_db_close(mtl_db *db)
{
    if (!db)
        return;
    for (int i = 0; i < db->n_readers; i++)
        mdb_txn_abort(db->readers[i].txn);
    if (db->env)
        mdb_env_close(db->env);
    pthread_mutex_destroy(&db->lock);
    mtl_db_meta_free(&db->meta);
    free(db->readers);
    free(db->path);
    free(db);
}

const mtl_db_meta *mtl_db_meta_of(const mtl_db *db) { return &db->meta; }

mtl_status mtl_db_get(mtl_db *db, int64_t index, mtl_record *out, mtl_error *err)
{
    if (index < 0 || index >= db->meta.count)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "record %" PRId64 " is out of range: '%s' holds %" PRId64 " records",
                        index, db->path, db->meta.count);
    MDB_txn *txn;
    MTL_TRY(db_txn(db, &txn, err));
    char key[24];
    format_key(key, index);
    MDB_val k = {strlen(key), key}, v;
    int rc = mdb_get(txn, db->dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        return mtl_fail(err, MTL_ERR_CORRUPT, "record %" PRId64 " is missing from '%s': the database is corrupt",
                        index, db->path);
    if (rc)
        return mtl_fail(err, MTL_ERR_CORRUPT, "cannot read record %" PRId64 " of '%s': %s", index, db->path,
                        mdb_strerror(rc));
    char what[64 + 4096];
    snprintf(what, sizeof(what), "record %" PRId64 " of '%s'", index, db->path);
    return mtl_record_decode(v.mv_data, v.mv_size, what, out, err);
}
