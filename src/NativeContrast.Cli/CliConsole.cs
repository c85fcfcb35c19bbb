namespace NativeContrast.Cli;

using Spectre.Console;

/// <summary>
/// Spectre.Console over a command's output writer: colours and the terminal's width on an interactive console,
/// plain text on a wide virtual line otherwise (pipes, files, tests), so that nothing wraps or carries escape codes.
/// </summary>
public static class CliConsole
{
    private const int RedirectedWidth = 160;

    public static IAnsiConsole For(TextWriter writer)
    {
        var interactive = ReferenceEquals(writer, Console.Out) && !Console.IsOutputRedirected;
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = interactive ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = interactive ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            // Live displays (train's progress bar) need an interactive terminal; elsewhere Spectre prints plain lines.
            Interactive = interactive ? InteractionSupport.Detect : InteractionSupport.No,
        });
        if (!interactive)
        {
            console.Profile.Width = RedirectedWidth;
        }
        return console;
    }
}
