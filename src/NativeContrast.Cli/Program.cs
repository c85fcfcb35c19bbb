namespace NativeContrast.Cli;

// SCAFFOLD: the command line is built by the foundation work (info) and later issues.
public static class Program
{
    public static int Main(string[] args)
    {
        Console.WriteLine("nativecontrast");
        return args.Length;
    }
}
