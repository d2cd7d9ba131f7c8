/* mtl datasets in LMDB (Debian's liblmdb): records under keys "%010u" (their index), plus one
 * metadata record (JSON) under MTL_DB_META_KEY, written last. A database without it is incomplete
 * (an interrupted conversion) and is refused. Writers build the database in "<path>.partial" and
 * rename it to <path> only after the metadata is committed, so an interrupted or failed conversion
 * never leaves something under the real name that looks complete. Readers open read-only and read
 * records straight from the memory map. */
#ifndef MTL_DATA_DB_H
#define MTL_DATA_DB_H

#include <stdint.h>

#include "core/error.h"
#include "data/record.h"

#define MTL_DB_META_KEY "__mtl_meta__"

typedef struct mtl_db_meta {
    int64_t count;         /* records */
    int n_labels;          /* K, labels per record */
    char **label_names;    /* K names or NULL; in a detection database (has_boxes) the category names in id
                            * order, ending with a NULL entry (n_labels is 0 there) */
    int channels, height, width; /* 0 when sizes vary */
    int encoded;
    int64_t skipped;       /* bad inputs skipped during conversion */
    int64_t missing_labels; /* labels written '-' */
    int has_boxes;
    int *category_ids;     /* detection: the category id (box class) named by each label_names entry, or NULL */
} mtl_db_meta;

typedef struct mtl_db_writer mtl_db_writer;
typedef struct mtl_db mtl_db;

/* Starts a new database at path (an existing one is replaced only when the new one completes). */
mtl_status mtl_db_writer_open(const char *path, mtl_db_writer **out, mtl_error *err);
/* Appends record number `index` (keys are the index). Commits in batches. */
mtl_status mtl_db_writer_put(mtl_db_writer *w, int64_t index, const mtl_record *r, mtl_error *err);
/* Writes the metadata, commits, and renames the database into place. Frees the writer either way: on
 * failure the partial files are removed as by mtl_db_writer_abort (do not call it afterwards). */
mtl_status mtl_db_writer_finish(mtl_db_writer *w, const mtl_db_meta *meta, mtl_error *err);
/* Abandons an unfinished database (removes the partial files); NULL is a no-op. */
void mtl_db_writer_abort(mtl_db_writer *w);

/* Opens a finished database read-only; errors name the path and say what is wrong (missing,
 * not an LMDB, truncated, no metadata record). */
mtl_status mtl_db_open(const char *path, mtl_db **out, mtl_error *err);
void mtl_db_close(mtl_db *db);
const mtl_db_meta *mtl_db_meta_of(const mtl_db *db);
/* Reads record `index` (0..count-1); the record points into the map and stays valid until the
 * next call on the same thread's read transaction. Safe to call from one other thread (the
 * prefetcher) while the database is open. */
mtl_status mtl_db_get(mtl_db *db, int64_t index, mtl_record *out, mtl_error *err);

void mtl_db_meta_free(mtl_db_meta *meta); /* frees label_names and category_ids */

#endif
