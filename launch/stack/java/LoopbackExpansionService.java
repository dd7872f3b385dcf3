// Beam's Java expansion service for the cross-language Kafka reader, bound to 127.0.0.1 (written for this project;
// `make install` compiles it into beam-kafka-expansion-service.jar, see launch/stack/install.py).
//
// Beam's own ExpansionService.main listens on every interface (ServerBuilder.forPort). This is the same service
// with the same command line (`<port> [pipeline options]`), on the loopback interface only, and always with the
// loopback worker (--alsoStartLoopbackWorker): the expanded Java transforms name this address as their EXTERNAL
// environment, and a runner without a Java harness of its own (Prism) asks it to start Java SDK workers, which
// then run as threads of this JVM.
package engagement.xlang;

import java.net.InetSocketAddress;
import java.util.Arrays;
import org.apache.beam.fn.harness.ExternalWorkerService;
import org.apache.beam.runners.fnexecution.artifact.ArtifactRetrievalService;
import org.apache.beam.sdk.expansion.service.ExpansionService;
import org.apache.beam.sdk.expansion.service.ExpansionServiceOptions;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.netty.NettyServerBuilder;

public final class LoopbackExpansionService {
  private static final String HOST = "127.0.0.1";

  private LoopbackExpansionService() {}

  public static void main(String[] args) throws Exception {
    if (args.length < 1) {
      System.err.println("usage: java -jar beam-kafka-expansion-service.jar <port> [pipeline options]");
      System.exit(2);
    }
    int port = Integer.parseInt(args[0]);
    PipelineOptionsFactory.register(ExpansionServiceOptions.class);
    PipelineOptions options =
        PipelineOptionsFactory.fromArgs(Arrays.copyOfRange(args, 1, args.length)).create();
    options.as(ExpansionServiceOptions.class).setAlsoStartLoopbackWorker(true);
    String address = HOST + ":" + port;
    Server server =
        NettyServerBuilder.forAddress(new InetSocketAddress(HOST, port))
            .addService(new ExpansionService(options, address))
            .addService(new ArtifactRetrievalService())
            .addService(new ExternalWorkerService(options))
            .build();
    server.start();
    System.out.println("expansion service listening on " + address);
    Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow));
    server.awaitTermination();
  }
}
