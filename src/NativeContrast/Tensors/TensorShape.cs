namespace NativeContrast.Tensors;

/// <summary>An immutable row-major shape. Dimensions are non-negative; the empty shape is a scalar.</summary>
public readonly struct TensorShape : IEquatable<TensorShape>
{
    private readonly int[]? _dims;

    public TensorShape(params int[] dims)
    {
        ArgumentNullException.ThrowIfNull(dims);
        foreach (var d in dims)
        {
            if (d < 0)
            {
                throw new ArgumentException($"shape [{string.Join(", ", dims)}] has a negative dimension", nameof(dims));
            }
        }
        _dims = (int[])dims.Clone();
    }

    public int Rank => _dims?.Length ?? 0;

    public int this[int axis] => (_dims ?? [])[axis < 0 ? Rank + axis : axis];

    public long Length
    {
        get
        {
            long n = 1;
            foreach (var d in _dims ?? [])
            {
                n *= d;
            }
            return n;
        }
    }

    public ReadOnlySpan<int> Dims => _dims;

    /// <summary>Rows of the matrix this shape is read as: every axis but the last, flattened ([6, 0] has 6 rows).</summary>
    public int Rows
    {
        get
        {
            long rows = 1;
            for (var axis = 0; axis < Rank - 1; axis++)
            {
                rows *= _dims![axis];
            }
            return checked((int)rows);
        }
    }

    /// <summary>Columns of the matrix this shape is read as: the last axis.</summary>
    public int Cols => Rank == 0 ? 1 : this[-1];

    public bool Equals(TensorShape other) => Dims.SequenceEqual(other.Dims);

    public override bool Equals(object? obj) => obj is TensorShape s && Equals(s);

    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (var d in Dims)
        {
            h.Add(d);
        }
        return h.ToHashCode();
    }

    public static bool operator ==(TensorShape a, TensorShape b) => a.Equals(b);

    public static bool operator !=(TensorShape a, TensorShape b) => !a.Equals(b);

    public static implicit operator TensorShape(int[] dims) => new(dims);

    public override string ToString() => $"[{string.Join(", ", (_dims ?? []).Select(d => d.ToString(System.Globalization.CultureInfo.InvariantCulture)))}]";
}
