namespace NativeContrast.Nn;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// Initialisers on the backend's Philox streams. Each parameter draws from its own stream (seed, arena index), so
/// a value does not depend on the order of initialisation, and a seed gives the same model on every backend.
/// </summary>
public static class Init
{
    /// <summary>U(−bound, bound): PyTorch's default for nn.Linear and nn.Conv2d (kaiming_uniform_ with a = √5).</summary>
    public static void Uniform(IBackend backend, Tensor t, float bound, ulong seed, ulong stream)
    {
        backend.RandomUniform(t, seed, stream);
        backend.Scale(t, 2f * bound, t);
        using var shift = backend.Allocate(t.Shape, "uniform shift");
        backend.Fill(shift, -bound);
        backend.Axpy(1f, shift, t);
    }
}
