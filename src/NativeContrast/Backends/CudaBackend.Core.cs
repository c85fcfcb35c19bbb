namespace NativeContrast.Backends;

using NativeContrast.Tensors;

// SCAFFOLD: replaced by the foundation work (native/elementwise.cu etc.).
public sealed partial class CudaBackend
{
    public void Add(Tensor a, Tensor b, Tensor y) => throw new NotImplementedException();

    public void Scale(Tensor x, float alpha, Tensor y) => throw new NotImplementedException();

    public void Axpy(float alpha, Tensor x, Tensor y) => throw new NotImplementedException();

    public void Relu(Tensor x, Tensor y) => throw new NotImplementedException();

    public void ReluBackward(Tensor y, Tensor dy, Tensor dx) => throw new NotImplementedException();

    public void Sum(Tensor x, Tensor result) => throw new NotImplementedException();

    public void SumRows(Tensor x, Tensor result) => throw new NotImplementedException();

    public void SumColumns(Tensor x, Tensor result) => throw new NotImplementedException();

    public void SoftmaxRows(Tensor x, Tensor y) => throw new NotImplementedException();

    public void LogSumExpRows(Tensor x, Tensor result) => throw new NotImplementedException();

    public void L2NormalizeRows(Tensor x, Tensor y, Tensor norms, float eps = 1e-12f) => throw new NotImplementedException();

    public void L2NormalizeRowsBackward(Tensor y, Tensor norms, Tensor dy, Tensor dx, float eps = 1e-12f) => throw new NotImplementedException();

    public void RandomUniform(Tensor tensor, ulong seed, ulong offset) => throw new NotImplementedException();

    public void RandomNormal(Tensor tensor, ulong seed, ulong offset, float mean = 0f, float std = 1f) => throw new NotImplementedException();
}
