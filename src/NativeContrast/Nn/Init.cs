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

    /// <summary>Binds a declared parameter by index, checking that the arena comes from the same layout.</summary>
    internal static ParameterView View(ParameterArena arena, int index, string expectedName)
    {
        if (index >= arena.Views.Count || arena[index].Name != expectedName)
        {
            var found = index < arena.Views.Count ? $"'{arena[index].Name}'" : "nothing";
            throw new ArgumentException($"arena parameter {index} is {found}, expected '{expectedName}': bind to the arena built from the layout the module declared into");
        }
        return arena[index];
    }
}
