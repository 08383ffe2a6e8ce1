#!/usr/bin/env python3
"""Spark MLlib implicit ALS on playpulse's Parquet lake: the route for training
past one machine.

    playpulse export parquet --data-dir DATA --out LAKE     # daemon stopped
    python spark/train_als.py --lake LAKE --out FACTORS [--master spark://...]
    playpulse models --data-dir DATA --import FACTORS       # scored, maybe promoted

Each (user, item) pair's implicit feedback is the daemon's own, as the lake
holds it: `LAKE/pair_aggregates` (videos) and `LAKE/music_pairs` (tracks,
listening counts times models.event_weights). The pairs the daemon's split holds
out (`held_out`, the draw `LAKE/split.json` names) are left out, so the
evaluator scores the import on pairs it never saw. Spark's ALS (implicitPrefs,
confidence 1 + alpha * |w|, λ scaled by each row's count of ratings) is fitted
with integer ids from StringIndexer, and the factors are written back under the
lake's ids:

    FACTORS/meta.json            source, rank, iterations, reg_param, alpha, fit_s, pairs, split
    FACTORS/users/*.parquet      id (string), features (list of float)
    FACTORS/items/*.parquet      id (string), features (list of float)

zstd-compressed, the codec playpulse reads. Needs pyspark (4.x, with Java 17).
"""

import argparse
import json
import os
import shutil
import sys
import time


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", required=True, help="the directory `playpulse export parquet --out` wrote")
    p.add_argument("--out", required=True, help="where the factors go (replaced)")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--reg", type=float, default=0.1)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--driver-memory", default="2g")
    a = p.parse_args()
    if not 1 <= a.rank <= 1024 or not 1 <= a.iterations <= 10000 or a.reg < 0 or a.alpha <= 0:
        sys.exit("--rank 1..=1024, --iterations 1..=10000, --reg >= 0 and --alpha > 0, as models.* are bounded")
    try:
        with open(os.path.join(a.lake, "split.json")) as f:
            split = json.load(f)
        split = {"seed": int(split["seed"]), "test_fraction": float(split["test_fraction"])}
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"{a.lake}/split.json: {e}: export the lake with `playpulse export parquet` (it writes the split)")

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession, functions as F
    from pyspark.ml.feature import StringIndexer
    from pyspark.ml.recommendation import ALS
    import pyspark

    spark = (SparkSession.builder.master(a.master).appName("playpulse-als")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.memory", a.driver_memory)
             .config("spark.sql.shuffle.partitions", "8")
             .config("spark.sql.parquet.compression.codec", "zstd")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")

    def table(kind):
        path = os.path.join(a.lake, kind)
        return spark.read.parquet(path) if os.path.isdir(path) else None

    parts = []
    for kind, item in (("pair_aggregates", "item_id"), ("music_pairs", "track_id")):
        t = table(kind)
        if t is not None:
            parts.append(t.filter(~F.col("held_out")).select(
                F.col("user_id").alias("user"), F.col(item).alias("item"),
                F.col("weight").cast("float").alias("weight")))
    if not parts:
        sys.exit(f"{a.lake}: no pair_aggregates or music_pairs: is it a `playpulse export parquet` lake?")
    pairs = parts[0]
    for more in parts[1:]:
        pairs = pairs.unionByName(more)
    pairs = pairs.filter(F.col("weight") != 0.0)

    users = StringIndexer(inputCol="user", outputCol="u", stringOrderType="alphabetAsc").fit(pairs)
    items = StringIndexer(inputCol="item", outputCol="i", stringOrderType="alphabetAsc").fit(pairs)
    indexed = items.transform(users.transform(pairs)).select(
        F.col("u").cast("int"), F.col("i").cast("int"), "weight").cache()
    n_pairs = indexed.count()
    if n_pairs == 0:
        sys.exit(f"{a.lake}: no pair with feedback to train on")

    t = time.time()
    model = ALS(rank=a.rank, maxIter=a.iterations, regParam=a.reg, alpha=a.alpha, implicitPrefs=True,
                userCol="u", itemCol="i", ratingCol="weight", seed=a.seed, nonnegative=False,
                coldStartStrategy="drop").fit(indexed)
    fit_s = time.time() - t

    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    for side, indexer, factors in (("users", users, model.userFactors), ("items", items, model.itemFactors)):
        labels = spark.createDataFrame(list(enumerate(indexer.labelsArray[0])), ["index", "name"])
        (factors.join(labels, factors.id == labels.index)
         .select(F.col("name").alias("id"), F.col("features").cast("array<float>").alias("features"))
         .write.parquet(os.path.join(a.out, side)))
    meta = {
        "source": f"spark-mllib-als {pyspark.__version__}",
        "rank": a.rank,
        "iterations": a.iterations,
        "reg_param": a.reg,
        "alpha": a.alpha,
        "fit_s": round(fit_s, 3),
        "pairs": n_pairs,
        "split": split,
    }
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f)
    spark.stop()
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
