namespace NativeContrast.Tests.Cli;

using NativeContrast.Cli;
using NativeContrast.Tests.Training;
using NativeContrast.Training;

/// <summary>SimCLR v2's pipeline on the CLI, on tiny settings: train simclr-v2 → finetune on 10% of the labels → distill; and the supervised baseline.</summary>
public class SemiSupervisedCommandTests
{
    private static readonly string[] Small = ["--workers", "1", "--device", "cpu"];

    private string _folder = "";

    [SetUp]
    public void CreateFolder() => _folder = TempFolder.Create("semi");

    [TearDown]
    public void DeleteFolder() => TempFolder.Delete(_folder);

    private static (int Code, string Output, string Error) Run(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var code = Program.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    /// <summary>One epoch of simclr-v2 on 320 built-in 16 px images into <paramref name="run"/> (or another method).</summary>
    private static void Pretrain(string run, string method = "simclr-v2")
    {
        var train = Run(["train", "--method", method, "--backbone", "resnet10", "--width", "0.125", "--image-size", "16", "--train-images", "320", "--batch", "32", "--epochs", "1", "--knn-every", "0", .. Small, "--out", run]);
        Assert.That(train.Code, Is.EqualTo(Program.Success), train.Error + train.Output);
    }

    [Test]
    public void TrainThenFinetuneOnTenPercentThenDistill()
    {
        var pretrained = Path.Combine(_folder, "simclr-v2");
        Pretrain(pretrained);

        var finetuned = Path.Combine(_folder, "finetune");
        var finetune = Run(["finetune", "--checkpoint", pretrained, "--labels", "10%", "--epochs", "2", "--batch", "10", .. Small, "--out", finetuned]);
        Assert.That(finetune.Code, Is.EqualTo(Program.Success), finetune.Error + finetune.Output);
        Assert.That(finetune.Output, Does.Contain("fine-tuning from head layer 1 of 3").And.Contain("10% labels, seed 0: 30 images, 3 per class"));
        Assert.That(finetune.Output, Does.Contain("epoch 2/2: loss").And.Contain("test top-1"));
        Assert.That(finetune.Output, Does.Contain("test top-1 (fine-tuned)").And.Contain("sgd lr 0.003906").And.Contain("wd 0,"));
        AssertRunFiles(finetuned);

        var distilled = Path.Combine(_folder, "distill");
        var distill = Run(["distill", "--teacher", finetuned, "--student-width", "0.0625", "--temperature", "2", "--label-weight", "0.5", "--epochs", "1", "--batch", "32", .. Small, "--out", distilled]);
        Assert.That(distill.Code, Is.EqualTo(Program.Success), distill.Error + distill.Output);
        Assert.That(distill.Output, Does.Contain("distill on builtin/train (320 images").And.Contain("resnet10 ×0.0625"));
        Assert.That(distill.Output, Does.Contain("test top-1 (student)").And.Contain("test top-1 (teacher)").And.Contain("student vs teacher"));
        AssertRunFiles(distilled);

        // The student is a classifier too: it can teach the next student.
        using var backend = new NativeContrast.Backends.CpuBackend();
        using var student = TrainedClassifier.Load(distilled, backend);
        Assert.That((student.Classes, student.Spec.Method, student.Spec.Width), Is.EqualTo((10, "distill", 0.0625)));
    }

    [Test]
    public void SupervisedTrainingOnALabelledSubsetReportsTheClassifier()
    {
        var run = Path.Combine(_folder, "supervised");
        var train = Run(["train", "--method", "supervised", "--labels", "50%", "--backbone", "resnet10", "--width", "0.125", "--image-size", "16", "--train-images", "64", "--batch", "10", "--epochs", "1", .. Small, "--out", run]);
        Assert.That(train.Code, Is.EqualTo(Program.Success), train.Error + train.Output);
        Assert.That(train.Output, Does.Contain("supervised on builtin/train [50% labels, seed 0: 30 images").And.Contain("supervised-cifar views"));
        Assert.That(train.Output, Does.Contain("test top-1 (classifier)").And.Contain("kNN top-1 (encoder)"));
        AssertRunFiles(run);
    }

    [Test]
    public void BadCheckpointsAndArgumentsAreExplained()
    {
        var pretrained = Path.Combine(_folder, "simclr-v2");
        Pretrain(pretrained);

        var deep = Run(["finetune", "--checkpoint", pretrained, "--from-head-layer", "4", .. Small, "--out", Path.Combine(_folder, "deep")]);
        Assert.That(deep.Code, Is.EqualTo(Program.BadArguments));
        Assert.That(deep.Error, Does.Contain("--from-head-layer 4 is beyond the projection head").And.Contain(pretrained).And.Contain("3 layers"));

        var labels = Run(["finetune", "--checkpoint", pretrained, "--labels", "ten%", .. Small]);
        Assert.That(labels.Code, Is.EqualTo(Program.BadArguments));
        Assert.That(labels.Error, Does.Contain("--labels 'ten%'"));

        var tooMany = Run(["finetune", "--checkpoint", pretrained, "--labels", "40", .. Small, "--out", Path.Combine(_folder, "many")]);
        Assert.That(tooMany.Code, Is.EqualTo(Program.BadArguments));
        Assert.That(tooMany.Error, Does.Contain("40 images of every class").And.Contain("has 32"));

        var notATeacher = Run(["distill", "--teacher", pretrained, .. Small, "--out", Path.Combine(_folder, "distill")]);
        Assert.That(notATeacher.Code, Is.EqualTo(Program.Failure));
        Assert.That(notATeacher.Error, Does.Contain(Trainer.CheckpointFileName).And.Contain("(simclr-v2) has no classifier"));

        var margin = Path.Combine(_folder, "margin");
        Pretrain(margin, "margin");
        var headless = Run(["finetune", "--checkpoint", margin, "--from-head-layer", "1", .. Small, "--out", Path.Combine(_folder, "headless")]);
        Assert.That(headless.Code, Is.EqualTo(Program.BadArguments));
        Assert.That(headless.Error, Does.Contain("(margin) has no projection head").And.Contain("--from-head-layer 0"));
    }

    private static void AssertRunFiles(string run)
    {
        foreach (var file in new[] { Trainer.CheckpointFileName, Trainer.EncoderFileName, MetricsLog.FileName, "training.png" })
        {
            Assert.That(File.Exists(Path.Combine(run, file)), Is.True, $"{run}: {file}");
        }
        Assert.That(File.ReadLines(Path.Combine(run, MetricsLog.FileName)).Where(l => l.Contains("\"type\":\"epoch\"", StringComparison.Ordinal)), Is.All.Contain("\"test_top1\":"));
    }
}
