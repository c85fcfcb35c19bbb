namespace NativeContrast.Bench;

// SCAFFOLD: replaced by the benchmark runner.
public static class Program
{
    public static int Main() => 0;
}
