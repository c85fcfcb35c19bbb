namespace NativeContrast.Eval;

using NativeContrast.Backends;
using NativeContrast.Tensors;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

/// <summary>Top-1 and top-5 accuracy (fractions in [0, 1]) over <see cref="Count"/> evaluated samples.</summary>
public readonly record struct Accuracy(double Top1, double Top5, int Count)
{
    public override string ToString() => $"top-1 {100 * Top1:F2}%  top-5 {100 * Top5:F2}%  ({Count} images)";
}

/// <summary>
/// Weighted k-nearest-neighbour classification on L2-normalised features (InstDisc; solo-learn's and lightly's kNN
/// monitor): the k training features most cosine-similar to a query vote for their class with weight exp(sim / T).
/// Defaults k = 200, T = 0.1. The similarities are GEMMs on a backend, a block of queries at a time.
/// </summary>
public sealed class KnnClassifier
{
    private const int QueryBlock = 256;

    public KnnClassifier(int k = 200, float temperature = 0.1f)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(k);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(temperature);
        K = k;
        Temperature = temperature;
    }

    public int K { get; }

    public float Temperature { get; }

    /// <summary>Classifies every row of <paramref name="test"/> against the labelled <paramref name="train"/> bank.</summary>
    public Accuracy Evaluate(FeatureSet train, FeatureSet test, IBackend? backend = null)
    {
        var predictions = Predict(train, test, backend);
        int top1 = 0, top5 = 0;
        for (var i = 0; i < test.Count; i++)
        {
            var ranked = predictions[i];
            top1 += ranked[0] == test.Labels[i] ? 1 : 0;
            top5 += Array.IndexOf(ranked, test.Labels[i]) is >= 0 and < 5 ? 1 : 0;
        }
        return new Accuracy(test.Count == 0 ? 0 : top1 / (double)test.Count, test.Count == 0 ? 0 : top5 / (double)test.Count, test.Count);
    }

    /// <summary>For each query, the classes ranked by their weighted votes (best first; classes without votes last).</summary>
    public int[][] Predict(FeatureSet train, FeatureSet test, IBackend? backend = null)
    {
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(test);
        if (train.Dim != test.Dim)
        {
            throw new ArgumentException($"train features have {train.Dim} dimensions, test features {test.Dim}", nameof(test));
        }
        if (train.Count == 0 || train.Labels.Any(l => l < 0))
        {
            throw new ArgumentException("the kNN bank needs at least one image and a label on every image", nameof(train));
        }
        var owned = backend is null ? new CpuBackend() : null;
        var compute = backend ?? owned!;
        try
        {
            var classes = Math.Max(train.Classes, test.Classes);
            var k = Math.Min(K, train.Count);
            using var bank = compute.Allocate(new TensorShape(train.Count, train.Dim), "knn bank");
            compute.CopyFromHost(Normalized(train), bank);
            var queries = Normalized(test);
            using var block = compute.Allocate(new TensorShape(QueryBlock, test.Dim), "knn queries");
            using var similarities = compute.Allocate(new TensorShape(QueryBlock, train.Count), "knn similarities");
            var hostQueries = new float[QueryBlock * test.Dim];
            var hostSimilarities = new float[(long)QueryBlock * train.Count];
            var ranked = new int[test.Count][];
            for (var start = 0; start < test.Count; start += QueryBlock)
            {
                var rows = Math.Min(QueryBlock, test.Count - start);
                Array.Clear(hostQueries);
                queries.AsSpan(start * test.Dim, rows * test.Dim).CopyTo(hostQueries);
                compute.CopyFromHost(hostQueries, block);
                compute.Gemm(block, false, bank, true, similarities);
                compute.CopyToHost(similarities, hostSimilarities);
                Parallel.For(0, rows, r =>
                {
                    ranked[start + r] = Vote(hostSimilarities.AsSpan(r * train.Count, train.Count), train.Labels, k, classes);
                });
            }
            return ranked;
        }
        finally
        {
            owned?.Dispose();
        }
    }

    private int[] Vote(ReadOnlySpan<float> similarities, int[] labels, int k, int classes)
    {
        // The k largest similarities: a min-heap of (similarity, index) keeps the best k seen so far.
        var heapValues = new float[k];
        var heapIndices = new int[k];
        var size = 0;
        for (var j = 0; j < similarities.Length; j++)
        {
            var s = similarities[j];
            if (size < k)
            {
                heapValues[size] = s;
                heapIndices[size] = j;
                SiftUp(heapValues, heapIndices, size++);
            }
            else if (s > heapValues[0])
            {
                heapValues[0] = s;
                heapIndices[0] = j;
                SiftDown(heapValues, heapIndices, size);
            }
        }
        var votes = new double[classes];
        for (var i = 0; i < size; i++)
        {
            votes[labels[heapIndices[i]]] += Math.Exp(heapValues[i] / Temperature);
        }
        var order = Enumerable.Range(0, classes).ToArray();
        // Stable on ties: the lower class wins, so a result never depends on the heap's order.
        return [.. order.OrderByDescending(c => votes[c]).ThenBy(c => c)];
    }

    private static float[] Normalized(FeatureSet set)
    {
        var values = (float[])set.Values.Clone();
        Parallel.For(0, set.Count, i =>
        {
            var row = values.AsSpan(i * set.Dim, set.Dim);
            var norm = TensorPrimitives.Norm(row);
            TensorPrimitives.Divide(row, MathF.Max(norm, 1e-12f), row);
        });
        return values;
    }

    private static void SiftUp(float[] values, int[] indices, int i)
    {
        while (i > 0)
        {
            var parent = (i - 1) / 2;
            if (values[parent] <= values[i])
            {
                return;
            }
            Swap(values, indices, i, parent);
            i = parent;
        }
    }

    private static void SiftDown(float[] values, int[] indices, int size)
    {
        var i = 0;
        while (true)
        {
            int left = (2 * i) + 1, right = left + 1, smallest = i;
            if (left < size && values[left] < values[smallest])
            {
                smallest = left;
            }
            if (right < size && values[right] < values[smallest])
            {
                smallest = right;
            }
            if (smallest == i)
            {
                return;
            }
            Swap(values, indices, i, smallest);
            i = smallest;
        }
    }

    private static void Swap(float[] values, int[] indices, int a, int b)
    {
        (values[a], values[b]) = (values[b], values[a]);
        (indices[a], indices[b]) = (indices[b], indices[a]);
    }
}
