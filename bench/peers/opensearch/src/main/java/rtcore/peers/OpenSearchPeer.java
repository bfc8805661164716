package rtcore.peers;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.index.mapper.MapperExtrasPlugin;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.painless.PainlessPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

/**
 * A single-node OpenSearch on loopback, plain HTTP, for tests and benchmarks.
 *
 * <p>Usage: {@code OpenSearchPeer HOME HTTP_PORT TRANSPORT_PORT}. Data lives in HOME/data, so a
 * second run on the same HOME finds the documents of the first. SIGTERM closes the node cleanly.
 */
public final class OpenSearchPeer {

    /** Node's plugin-taking constructor is protected: OpenSearch's own MockNode subclasses it too. */
    private static final class PeerNode extends Node {
        PeerNode(Environment environment, List<Class<? extends Plugin>> plugins) {
            super(environment, plugins, true);
        }
    }

    private static final List<Class<? extends Plugin>> PLUGINS =
            List.of(Netty4Plugin.class, CommonAnalysisPlugin.class, MapperExtrasPlugin.class,
                    PainlessPlugin.class);

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: OpenSearchPeer HOME HTTP_PORT TRANSPORT_PORT");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        Files.createDirectories(home.resolve("config"));
        Settings settings = Settings.builder()
                .put("path.home", home.toString())
                .put("path.data", home.resolve("data").toString())
                .put("path.logs", home.resolve("logs").toString())
                .put("cluster.name", "rtcore-peer")
                .put("node.name", "peer")
                .put("network.host", "127.0.0.1")
                .put("http.port", args[1])
                .put("transport.port", args[2])
                .put("discovery.type", "single-node")
                // a test machine's disk may be fuller than the production watermarks allow
                .put("cluster.routing.allocation.disk.threshold_enabled", false)
                .build();
        Environment environment = InternalSettingsPreparer.prepareEnvironment(
                settings, Collections.emptyMap(), home.resolve("config"), () -> "peer");
        Node node = new PeerNode(environment, PLUGINS);
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }));
        node.start();
        System.out.println("opensearch-peer: started, http 127.0.0.1:" + args[1]);
        closed.await();
    }
}
