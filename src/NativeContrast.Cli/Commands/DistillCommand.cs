namespace NativeContrast.Cli.Commands;

using System.CommandLine;
using System.Globalization;
using NativeContrast.Data;
using NativeContrast.Eval;
using NativeContrast.Methods;
using NativeContrast.Nn;
using NativeContrast.Training;
using Spectre.Console;

/// <summary>
/// `nativecontrast distill`: SimCLR v2's third step. A fine-tuned teacher runs frozen (eval mode) on the same augmented
/// view as a student (the teacher's size: self-distillation; smaller: big-to-small), which learns its softened
/// predictions on the whole train split, labels unused (−Σ softmax(t/T) log softmax(s/T)), plus an optional label term
/// (--label-weight a: a · cross-entropy on the true label of the images in the labelled subset, by default the one the
/// teacher was fine-tuned on). The student's test top-1 after every epoch; the summary puts it beside the teacher's.
/// Recipe for small images on a CPU: momentum SGD 0.9 at 0.2 × batch / 256, weight decay 5e-4, cosine decay, batch 128.
/// </summary>
public static class DistillCommand
{
    public static class Defaults
    {
        public const int Epochs = 30;
        public const int Batch = 128;
    }

    public static Command Create()
    {
        var teacher = new Option<string>("--teacher") { Description = "The fine-tuned teacher: a checkpoint of 'finetune' (or 'train --method supervised'), or its run directory.", Required = true };
        var studentBackbone = new Option<string?>("--student-backbone") { Description = "The student's ResNet; by default the teacher's (self-distillation)." };
        studentBackbone.AcceptOnlyFromAmong([.. ResNetOptions.Names]);
        var studentWidth = new Option<double?>("--student-width") { Description = "The student's width multiplier; by default the teacher's." };
        var temperature = new Option<float>("--temperature") { Description = "T of both softmaxes (SimCLR v2: 1).", DefaultValueFactory = _ => 1f };
        var labelWeight = new Option<float>("--label-weight") { Description = "a of the label term on the labelled subset's images (0: none).", DefaultValueFactory = _ => 0f };
        var labels = new Option<string?>("--labels") { Description = "The labelled subset of the label term: a percentage (1%, 10%) or images per class; by default the teacher's." };
        var labelsSeed = new Option<ulong?>("--labels-seed") { Description = "Seed of the subset's draw; by default the teacher's." };
        var common = new SupervisedRunOptions(Defaults.Epochs, Defaults.Batch, "distill", warmupDefault: null, knnEvery: 0);
        var command = new Command("distill", "Distil a fine-tuned teacher into a student on unlabelled images (SimCLR v2), with an optional label term.")
        {
            teacher, studentBackbone, studentWidth, temperature, labelWeight, labels, labelsSeed,
        };
        common.AddTo(command);
        command.SetAction(parse => Run(
            new Request(
                parse.GetRequiredValue(teacher), parse.GetValue(studentBackbone), parse.GetValue(studentWidth), parse.GetRequiredValue(temperature),
                parse.GetRequiredValue(labelWeight), parse.GetValue(labels), parse.GetValue(labelsSeed)),
            common.Read(parse),
            parse.InvocationConfiguration.Output,
            parse.InvocationConfiguration.Error));
        return command;
    }

    private sealed record Request(string Teacher, string? StudentBackbone, double? StudentWidth, float Temperature, float LabelWeight, string? Labels, ulong? LabelsSeed);

    private static int Run(Request request, SupervisedRunOptions.Values run, TextWriter output, TextWriter error)
    {
        if (!(request.Temperature > 0) || !(request.LabelWeight >= 0) || request.StudentWidth is <= 0)
        {
            error.WriteLine($"error: --temperature ({request.Temperature}) and --student-width must be > 0, --label-weight ({request.LabelWeight}) >= 0");
            return Program.BadArguments;
        }
        if (DeviceOption.Open(run.Device, error) is not { } choice)
        {
            return Program.Failure;
        }
        var console = CliConsole.For(output);
        using var backend = choice.Backend;
        backend.GemmPrecision = TrainCommand.Precision(run.Precision);
        console.WriteLine($"backend    {choice.Reason}");
        using var session = new TrainingSession();
        try
        {
            using var teacher = TrainedClassifier.Load(request.Teacher, backend);
            var spec = teacher.Spec;
            console.WriteLine($"teacher    {teacher.Path}");
            console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"           {spec.Method}, {spec.Arch} x{spec.Width} {spec.Stem} stem, {teacher.Classes} classes, on {spec.Dataset}{(spec.Labels is { } l ? $" [{l} labels]" : "")}"));
            var dataOptions = spec.DatasetOptions(spec.Dataset, run.DataDir) with { Log = line => console.WriteLine(line) };
            using var train = DatasetCatalog.Open(spec.Dataset, DatasetSplit.Train, dataOptions);
            using var test = TrainCommand.OpenTest(spec.Dataset, dataOptions);
            if (!train.Stats.Mean.SequenceEqual(spec.Mean) || !train.Stats.Std.SequenceEqual(spec.Std))
            {
                throw new ArgumentException($"{train.Name} is normalised with {train.Stats}; the teacher {teacher.Path} was trained with {spec.Normalization}: its data set has changed");
            }
            var budgetText = request.Labels ?? spec.Labels;
            using var labelled = budgetText is null ? null : LabelledSubset.Draw(train, LabelBudget.Parse(budgetText), request.LabelsSeed ?? spec.LabelsSeed ?? 0);
            if (request.LabelWeight > 0 && labelled is null)
            {
                throw new ArgumentException($"--label-weight {request.LabelWeight.ToString(CultureInfo.InvariantCulture)} needs a labelled subset: give --labels (the teacher {teacher.Path} records none)");
            }
            var smallImages = Math.Min(train.Shape.Height, train.Shape.Width) <= 64;
            var arch = request.StudentBackbone ?? spec.Arch;
            var student = ResNetOptions.FromName(arch) with
            {
                WidthMultiplier = request.StudentWidth ?? spec.Width,
                Stem = spec.BackboneOptions.Stem,
            };
            var method = new Distillation(
                new DistillationOptions
                {
                    Classes = teacher.Classes,
                    Temperature = request.Temperature,
                    LabelWeight = request.LabelWeight,
                    Teacher = teacher.Path,
                    Augmentations = run.Views ?? (smallImages ? "supervised-cifar" : "supervised"),
                },
                teacher.Model,
                request.LabelWeight > 0 ? labelled : null);
            var options = run.TrainingOptions(method, smallImages) with { DataSeed = spec.DataSeed ?? spec.Seed };
            using var trainer = new Trainer(backend, method, arch, student, train, test, options, spec.Dataset);
            if (run.Resume is { } resume)
            {
                trainer.Resume(TrainedBackbone.Resolve(resume));
            }
            var title = string.Create(CultureInfo.InvariantCulture, $"distill {spec.Arch} x{spec.Width} -> {arch} x{student.WidthMultiplier} on {spec.Dataset}");
            if (session.Run(console, output, trainer, options.OutputDirectory!, title) is not (var result, var plot))
            {
                return TrainCommand.Interrupted;
            }
            var table = TrainingSession.Summary(trainer, result);
            table.AddRow("teacher", Markup.Escape(string.Create(CultureInfo.InvariantCulture, $"{teacher.Path} ({spec.Method}, {spec.Arch} x{spec.Width})")));
            if (result.Classifier is { } studentAccuracy && test is not null)
            {
                var teacherAccuracy = ClassifierAccuracy.Evaluate(teacher.Classifier, new FeatureExtractor(teacher.Backbone, spec.Normalization, options.EvalBatchSize).Extract(test), options.EvalBatchSize);
                table.AddRow("test top-1 (student)", TrainingSession.Percent(studentAccuracy));
                table.AddRow("test top-1 (teacher)", TrainingSession.Percent(teacherAccuracy));
                table.AddRow("student vs teacher", string.Create(CultureInfo.InvariantCulture, $"{100 * (studentAccuracy.Top1 - teacherAccuracy.Top1):+0.00;-0.00} points"));
            }
            if (result.Knn is { } knn)
            {
                table.AddRow("kNN top-1 (student encoder)", TrainingSession.Percent(knn));
            }
            TrainingSession.AddFiles(table, trainer, result, plot);
            console.Write(table);
            return Program.Success;
        }
        catch (Exception e) when (Program.IsExplained(e))
        {
            return Program.Explain(error, e);
        }
    }
}
