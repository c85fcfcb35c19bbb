namespace NativeContrast.Distributed;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>Argument checks shared by the communicators; every message names the collective, the tensor and what is wrong.</summary>
internal static class CollectiveCheck
{
    /// <summary>The line every implementation writes (or throws) when a rank aborts the job, on one line whatever the message holds.</summary>
    public static string AbortLine(int rank, int size, string message) =>
        $"rank {rank} of {size} aborted the job: {string.Join(" ", message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))}";

    public static void Root(string collective, int root, int size)
    {
        if (root < 0 || root >= size)
        {
            throw new ArgumentOutOfRangeException(nameof(root), root, $"{collective}: root {root} is not a rank of this job (0 to {size - 1})");
        }
    }

    /// <summary>The tensor lives on <paramref name="device"/> (and, for CUDA, on device <paramref name="ordinal"/>).</summary>
    public static void Device(string communicator, string collective, Tensor tensor, Device device, int ordinal = 0)
    {
        if (tensor.Device != device || (device == Tensors.Device.Cuda && tensor.Storage.DeviceOrdinal != ordinal))
        {
            throw new ArgumentException(
                $"{communicator} {collective}: {tensor.Describe()} lives on {Where(tensor.Device, tensor.Storage.DeviceOrdinal)}, this communicator moves tensors on {Where(device, ordinal)}");
        }
    }

    /// <summary>
    /// output is <paramref name="size"/> inputs stacked along the first axis (AllGather's output, ReduceScatter's
    /// input): the same trailing axes, <paramref name="size"/> times the rows; and the two share no elements.
    /// </summary>
    public static void Stacked(string collective, Tensor single, Tensor stacked, int size)
    {
        var one = single.Shape.Dims;
        var all = stacked.Shape.Dims;
        if (one.Length == 0)
        {
            throw new ArgumentException($"{collective}: {single.Describe()} has no axis to stack ranks along; give it at least one");
        }
        if (all.Length != one.Length || all[0] != (long)size * one[0] || !all[1..].SequenceEqual(one[1..]))
        {
            var expected = $"[{(long)size * one[0]}{string.Concat(one[1..].ToArray().Select(d => $", {d}"))}]";
            throw new ArgumentException(
                $"{collective}: {stacked.Describe()} must stack {size} rank(s) of {single.Describe()} along the first axis: expected {expected}");
        }
        Check.Disjoint(stacked, single, $"{collective} reads one while it writes the other");
    }

    private static string Where(Device device, int ordinal) => device == Tensors.Device.Cpu ? "cpu" : $"cuda:{ordinal}";
}
