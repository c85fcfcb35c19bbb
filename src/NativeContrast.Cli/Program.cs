namespace NativeContrast.Cli;

using System.CommandLine;
using NativeContrast.Cli.Commands;

// SCAFFOLD: the command line is built by the foundation work (info) and later issues; `preview` is wired here to try it.
public static class Program
{
    public static int Main(string[] args) =>
        new RootCommand("nativecontrast")
        {
            PreviewCommand.Create(),
        }.Parse(args).Invoke();
}
